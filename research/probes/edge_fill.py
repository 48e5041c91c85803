"""Faces that fill the frame: how the part of a crop that lies outside the photo should be filled.

UTKFace val crops (200 px) are re-cropped with the window shifted by a share of its side (left, up, right, down in
turn), so that part of it lies outside the photo and must be filled, as `crop_face` fills it for a face near the edge
of a user's photo. Each fill (replicated border, black as the training augmentation's zoom-out and shift fill,
reflection, mid-grey) is compared with the unshifted crop's prediction and with the true age.

    UTKFACE_DIR=... .venv/bin/python research/probes/edge_fill.py [--model M] [--shift 0.15]
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from agegender.data import load_utkface
from agegender.data.images import open_image
from agegender.serving.predict import Predictor

FILLS = {"replicate": (cv2.BORDER_REPLICATE, 0), "black": (cv2.BORDER_CONSTANT, 0),
         "reflect": (cv2.BORDER_REFLECT_101, 0), "grey": (cv2.BORDER_CONSTANT, 128)}


def shifted(image: np.ndarray, dx: float, dy: float, border: int, value: int) -> np.ndarray:
    side = image.shape[0]
    matrix = np.float64([[1, 0, dx * side], [0, 1, dy * side]])
    return cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=border, borderValue=(value, value, value))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--shift", type=float, default=0.15)
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    frame = load_utkface()
    val = frame[frame["split"] == "val"]
    images = [np.asarray(open_image(p)) for p in val["path"]]
    ages = val["age"].to_numpy(float)
    base = np.array([p.age for p in predictor.predict_crops(np.stack([predictor.prepare(im) for im in images]))])
    print(f"unshifted: MAE {np.abs(base - ages).mean():.3f} bias {(base - ages).mean():+.2f}")
    directions = [(-1, 0), (0, -1), (1, 0), (0, 1)]
    for name, (border, value) in FILLS.items():
        crops = [predictor.prepare(shifted(im, args.shift * directions[i % 4][0], args.shift * directions[i % 4][1],
                                           border, value)) for i, im in enumerate(images)]
        pred = np.array([p.age for p in predictor.predict_crops(np.stack(crops))])
        print(f"{name:>10}: MAE {np.abs(pred - ages).mean():.3f} bias {(pred - ages).mean():+.2f} | "
              f"moved from unshifted by {np.abs(pred - base).mean():.2f} y on average, {(pred - base).mean():+.2f} mean",
              flush=True)


if __name__ == "__main__":
    main()
