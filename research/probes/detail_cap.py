"""The serving-side detail cap of research/domain_robustness.md: each model input (128 px) shrunk to N px (area) and
enlarged back (bilinear) before the model, on UTKFace val and on FG-NET's largest faces (whole-photo path).

    UTKFACE_DIR=... .venv/bin/python research/probes/detail_cap.py ../shared/datasets/fgnet MODEL [MODEL ...]
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from agegender.data import load_utkface
from agegender.data.preprocess import load_split_arrays
from agegender.serving.modelio import input_resize
from agegender.serving.predict import Predictor
from _photos import model_inputs

CAPS = (None, 96, 80, 64)


def capped(images: np.ndarray, side: int | None) -> np.ndarray:
    if side is None:
        return images
    size = images.shape[1]
    return np.stack([cv2.resize(cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA), (size, size),
                                interpolation=cv2.INTER_LINEAR) for im in images])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fgnet")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    frame = load_utkface()
    val = frame[frame["split"] == "val"]
    for path in args.models:
        predictor = Predictor.load(path)
        crops, ages = model_inputs(predictor, args.fgnet)
        card = predictor.card
        val_images, val_rows, _ = load_split_arrays(val, card["input"]["image_size"], card["input"]["color_mode"],
                                                    resize=input_resize(card), progress=False)
        for side in CAPS:
            v = np.array([p.age for p in predictor.predict_crops(capped(val_images, side))]) - val_rows["age"].to_numpy()
            f = np.array([p.age for p in predictor.predict_crops(capped(crops, side))]) - ages
            print(f"{card['name']:>18} cap {str(side):>4}: val MAE {np.abs(v).mean():.3f} bias {v.mean():+.2f} | "
                  f"FG-NET ({len(ages)} faces) MAE {np.abs(f).mean():.3f} bias {f.mean():+.2f}", flush=True)


if __name__ == "__main__":
    main()
