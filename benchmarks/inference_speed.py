"""Load time of a saved model and latency of one aligned face (median of repeated calls).

    python benchmarks/inference_speed.py [--model models/agenet.keras] [--repeats 50]
    python benchmarks/inference_speed.py --build lite2 --size 144 [--repeats 200]

Load time is measured after TensorFlow is imported (importing TensorFlow itself takes a few seconds
once per process and is the same for every model). Latency covers the whole per-face path of
``agegender predict --aligned``: model-input conversion and one compiled model call (with the test-time
views the model card asks for, mirror and zooms, in the same call).

``--build BACKBONE --size N`` times a model before it is trained: an AgeNet with that EfficientNet-Lite backbone
and random weights (the same graph as a trained one, so the same cost), exported to float16 TFLite as
``agegender export`` does and served as ``--model``'s card says, at an input side of N pixels. It answers whether a
recipe with a larger input or backbone can still serve one face in under 10 ms before its training is spent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402,F401  (import cost excluded from the load time)
import numpy as np  # noqa: E402

from agegender.config import SAMPLE_DIR, default_model_path  # noqa: E402
from agegender.data.images import channels, open_image  # noqa: E402
from agegender.models import build_model, with_age_readout  # noqa: E402
from agegender.serving.export import convert  # noqa: E402
from agegender.serving.litert import TFLiteModel  # noqa: E402
from agegender.serving.modelio import read_card  # noqa: E402
from agegender.serving.predict import Predictor  # noqa: E402


def untrained_predictor(backbone: str, size: int, card_of: str, folder: Path) -> Predictor:
    """An untrained AgeNet (``backbone``, ``size`` px) exported to float16 TFLite in ``folder``, served as the
    model card ``card_of`` says (colour, resize, the card's model settings, read-out, test-time views) with the input
    side and the backbone replaced; built as training builds it (``build_model``)."""
    card = read_card(card_of)  # a fresh dict from the file, so it can be changed here
    card["input"]["image_size"] = size
    model_kwargs = {**card.get("config", {}).get("model_kwargs", {}), "backbone": backbone, "backbone_weights": None}
    model = build_model("agenet", size, channels(card["input"]["color_mode"]), **model_kwargs)
    model = with_age_readout(model, card.get("age_readout", {}).get("method", "expectation"))
    path = folder / f"untrained_{backbone}_{size}.tflite"
    path.write_bytes(convert(model))
    return Predictor(TFLiteModel(path), card, path=path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--build", metavar="BACKBONE", choices=("lite0", "lite1", "lite2"),
                        help="time an untrained AgeNet with this backbone instead (served as --model's card says)")
    parser.add_argument("--size", type=int, help="input side in pixels of --build (default: --model's)")
    args = parser.parse_args()
    if args.size is not None and not args.build:
        parser.error("--size goes with --build")
    if not args.build:
        time_predictor(partial(Predictor.load, args.model), args.model, args.repeats)
        return
    size = args.size or int(read_card(args.model)["input"]["image_size"])
    label = f"untrained AgeNet ({args.build}, {size} px, served as {args.model}'s card says)"
    with tempfile.TemporaryDirectory() as folder:
        time_predictor(partial(untrained_predictor, args.build, size, args.model, Path(folder)), label,
                       args.repeats, setup="build and export")


def time_predictor(build: Callable[[], Predictor], model_name: str, repeats: int, setup: str = "load") -> None:
    """Print the time ``build()`` takes (``setup``) and the predictor's latency for one aligned face."""
    start = time.perf_counter()
    predictor = build()
    load_seconds = time.perf_counter() - start
    face = open_image(sorted(SAMPLE_DIR.glob("*.jpg"))[0])
    start = time.perf_counter()
    predictor.predict_crops(np.stack([predictor.prepare(face)]))
    first_call = time.perf_counter() - start
    latencies = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_crops(np.stack([predictor.prepare(face)]))
        latencies.append(time.perf_counter() - start)
    # a .keras model is served by its TFLite export when the export matches it
    served = predictor.model.path if isinstance(predictor.model, TFLiteModel) else model_name
    print(f"model {model_name}, served by {os.path.basename(str(served))} ({os.path.getsize(served) / 1e6:.1f} MB), "
          f"{os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{setup}: {load_seconds:.2f} s; first call (graph tracing): {first_call:.2f} s")
    print(f"one aligned face: median {1000 * statistics.median(latencies):.1f} ms, "
          f"p90 {1000 * sorted(latencies)[int(0.9 * len(latencies))]:.1f} ms over {repeats} calls "
          f"(tta_flip={predictor.views['tta_flip']}, tta_zoom={list(predictor.views['tta_zoom'])})")


if __name__ == "__main__":
    main()
