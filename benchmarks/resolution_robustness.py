"""How the models hold up on blurred, low-resolution faces (webcams, small faces in group photos).

Each test face is shrunk to a fraction of the model's input side (area average) and enlarged back
(bilinear), the same degradation as the ``augment_low_resolution`` training augmentation, then predicted
as the model card says (read-out, flip averaging). Prints gender accuracy, age MAE and MAE per age band
per model and fraction; fraction 1.0 is the untouched test split (the card's figures).

    UTKFACE_DIR=/path/to/UTKFace python benchmarks/resolution_robustness.py MODEL [MODEL ...] [--split test]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from _splits import split_arrays  # noqa: E402

from agegender.config import AGE_BANDS  # noqa: E402
from agegender.data import load_utkface  # noqa: E402
from agegender.data.pipeline import degrade_resolution  # noqa: E402
from agegender.evaluation.metrics import evaluate_predictions  # noqa: E402
from agegender.serving.inference import predict_arrays, tta_settings  # noqa: E402
from agegender.serving.modelio import load_serving_model  # noqa: E402

FRACTIONS = (1.0, 0.5, 0.33, 0.25)
CHUNK = 256  # images degraded per call, which bounds TensorFlow's intermediate tensors


def degraded(images: np.ndarray, fraction: float) -> np.ndarray:
    """Every image shrunk to ``fraction`` of its side and enlarged back; 1.0 returns the images as they are."""
    if fraction == 1.0:
        return images
    seed = np.array([0, 0], dtype="int32")  # probability 1 and a fixed fraction: nothing random is drawn
    return np.concatenate([degrade_resolution(images[i:i + CHUNK].astype("float32"), seed, 1.0,
                                              keep=(fraction, fraction)).numpy()
                           for i in range(0, len(images), CHUNK)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    args = parser.parse_args()
    frame = load_utkface()
    print(f"{args.split} split; side kept = fraction of the model's input side (1.0 = untouched)")
    print(f"{'model':<32} {'side kept':>9} {'gender %':>8} {'age MAE':>7} "
          + " ".join(f"{label:>6}" for label, _, _ in AGE_BANDS))
    for path in args.models:
        model, card = load_serving_model(path, prefer_tflite=False)  # every model as Keras, alike
        images, rows = split_arrays(card, frame, args.split)
        for fraction in FRACTIONS:
            pred = predict_arrays(model, degraded(images, fraction), **tta_settings(card))
            m = evaluate_predictions(rows, pred["age"], pred["p_female"])
            print(f"{card['name']:<32} {fraction:>9.2f} {100 * m['gender_accuracy']:8.2f} {m['age_mae']:7.2f} "
                  + " ".join(f"{band['age_mae']:6.2f}" for band in m["by_age_band"]), flush=True)


if __name__ == "__main__":
    main()
