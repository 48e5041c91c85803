"""What int8 quantization of the served model would buy: size, latency and accuracy beside the float16 export.

A probe, not a product: ``agegender export`` writes float16 weights (the served default). This converts the same
Keras model several ways and serves each on the val and test splits, as the model card says:

- ``float16``: what ``agegender export`` writes;
- ``dynamic int8``: int8 weights, float activations (``tf.lite.Optimize.DEFAULT`` without calibration);
- ``int8 convolutions``: the convolution ops (and the adds, pads and pools between them) in int8, calibrated on
  training faces; every other op (the heads, the read-outs, the gender mix) left in float, since an int8 softmax or
  division breaks the age read-out and the gender logit;
- ``int8, layers above E kept float``: as above, and the layers whose int8 output error is large, measured by
  TensorFlow's quantization debugger as RMSE / quantization step on other training faces, kept in float too
  (the debugger guide's "selective quantization").

Per variant: file size, the median latency of one face (the interpreter alone, ``--repeats`` calls after warm-up),
val and test age MAE, gender accuracy and 60+ MAE, and how far its predictions are from the Keras model's
(mean and largest age difference, share of faces given the same gender).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/quantization_probe.py [--model models/agenet.keras]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits, _timing, results_table

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _splits import predict_model_splits, split_arrays  # noqa: E402
from _timing import median_ms  # noqa: E402
from results_table import markdown  # noqa: E402

from agegender.config import AGE_BANDS, default_model_path  # noqa: E402
from agegender.data import load_utkface  # noqa: E402
from agegender.serving.export import convert, prediction_differences  # noqa: E402
from agegender.serving.litert import TFLiteModel  # noqa: E402
from agegender.serving.modelio import load_model  # noqa: E402

#: ops quantized in the "int8 convolutions" variants; everything else stays float
INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "QUANTIZE", "DEQUANTIZE"}
LAYER_ERRORS = (0.7, 0.45, 0.35)
OLD = AGE_BANDS[-1]


def batches(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A representative-dataset generator of one image at a time, as the converter wants it."""
    return lambda: ([images[i:i + 1].astype(np.float32)] for i in range(len(images)))


def int8_converter(saved_model: str, calibration: np.ndarray):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = batches(calibration)
    return converter


def op_names(flatbuffer: bytes) -> set[str]:
    """The ops a TFLite model holds (the quantization debugger takes a deny list, so the rest is derived from them)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def int8_variants(model, calibration: np.ndarray, debug: np.ndarray, float_ops: list[str]) -> dict[str, bytes]:
    """The int8 flatbuffers: dynamic range, convolutions only, and convolutions minus the worst layers;
    ``float_ops`` are kept in float in the last two."""
    import tensorflow as tf

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        dynamic = tf.lite.TFLiteConverter.from_saved_model(folder)
        dynamic.optimizations = [tf.lite.Optimize.DEFAULT]
        out["dynamic int8"] = dynamic.convert()
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=int8_converter(folder, calibration), debug_dataset=batches(debug),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops))
        out["int8 convolutions"] = debugger.get_nondebug_quantized_model()
        debugger.run()
        with tempfile.NamedTemporaryFile("w+", suffix=".csv") as handle:
            debugger.layer_statistics_dump(handle)
            handle.flush()
            layers = pd.read_csv(handle.name)
        layers["error"] = np.sqrt(layers["mean_squared_error"]) / layers["scale"]
        for limit in LAYER_ERRORS:
            kept_float = list(layers.loc[layers["error"] > limit, "tensor_name"])
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops, denylisted_nodes=kept_float)
            selective = tf.lite.experimental.QuantizationDebugger(
                converter=int8_converter(folder, calibration), debug_dataset=batches(debug[:1]), debug_options=options)
            out[f"int8, {len(kept_float)} layers above {limit} kept float"] = selective.get_nondebug_quantized_model()
    return out


def figures(pred: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    err = np.abs(pred["pred_age"] - pred["age"])
    old = (pred["age"] >= OLD[1]) & (pred["age"] <= OLD[2])
    diffs = prediction_differences({"age": reference["pred_age"], "p_female": reference["p_female"]},
                                   {"age": pred["pred_age"], "p_female": pred["p_female"]})
    return {"age MAE": err.mean(), "gender %": 100 * np.mean((pred["p_female"] >= 0.5) == (pred["gender"] == 1)),
            "60+ MAE": err[old].mean(), "mean age diff": diffs["mean_age_diff_years"],
            "max age diff": diffs["max_age_diff_years"], "same gender %": 100 * diffs["gender_agreement"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--calibration", type=int, default=300, help="training faces that calibrate int8 ranges")
    parser.add_argument("--debug", type=int, default=64, help="other training faces for the per-layer errors")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    model, card = load_model(args.model)
    frame = load_utkface()
    train = frame[frame["split"] == "train"].sample(n=args.calibration + args.debug, random_state=0)
    images, _ = split_arrays(card, train, "train")
    calibration, debug = images[:args.calibration], images[args.calibration:]
    float16 = convert(model, "float16")
    float_ops = sorted(op_names(float16) - INT8_OPS)
    flatbuffers = {"float16": float16, **int8_variants(model, calibration, debug, float_ops)}

    reference = predict_model_splits(model, card)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, flatbuffer in flatbuffers.items():
            path = Path(folder) / f"variant{len(rows)}.tflite"
            path.write_bytes(flatbuffer)
            served = TFLiteModel(path)
            face = debug[:1].astype(np.float32)
            row = {"MB": path.stat().st_size / 1e6,
                   "ms per face": median_ms(lambda: served.infer(face), args.repeats, warmup=10)}
            for split, pred in predict_model_splits(served, card).items():
                row.update({f"{split} {k}": v for k, v in figures(pred, reference[split]).items()})
            rows[name] = row
            print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows).T
    keras_row = {f"{split} {k}": v for split in reference for k, v in figures(reference[split], reference[split]).items()}
    table = pd.concat([pd.DataFrame([keras_row], index=["Keras model"]), table])
    print(f"\nmodel {args.model}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"calibration {args.calibration} and debug {args.debug} training faces")
    print(markdown(table.astype(float).round(3), list(table.columns)))


if __name__ == "__main__":
    main()
