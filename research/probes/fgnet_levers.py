"""Inference-side probes on FG-NET: what in a real photo's face crop moves our ages (no retraining).

Each variant changes only how the largest face of each FG-NET photo is turned into the model's input;
detection runs once. Prints MAE / bias per variant (all 1,002 photos) and writes per-photo ages.

    UTKFACE_DIR=... .venv/bin/python research/probes/fgnet_levers.py ../shared/datasets/fgnet [--model M]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from agegender.serving.predict import Predictor
from _photos import largest_faces


def cap(side):
    def f(crop):
        if crop.shape[0] <= side:
            return crop
        return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return f


def gray(crop):
    return cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def blur(sigma):
    return lambda crop: cv2.GaussianBlur(crop, (0, 0), sigma * crop.shape[0] / 128)


VARIANTS = {
    "base": (cv2.BORDER_REPLICATE, None),
    "border_black": (cv2.BORDER_CONSTANT, None),
    "border_reflect": (cv2.BORDER_REFLECT_101, None),
    "cap96": (cv2.BORDER_REPLICATE, cap(96)),
    "cap64": (cv2.BORDER_REPLICATE, cap(64)),
    "blur1": (cv2.BORDER_REPLICATE, blur(1.0)),
    "gray": (cv2.BORDER_REPLICATE, gray),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--model")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/fgnet_levers.json")
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    photos, found = largest_faces(predictor, args.folder)
    images, faces = [rgb for rgb, _ in found], [face for _, face in found]
    ages = np.array([p.age for p in photos])
    has = np.array([f is not None for f in faces])
    results = {}
    for name in args.variants.split(","):
        border, transform = VARIANTS[name]
        crops = []
        for rgb, face in zip(images, faces):
            if face is None:
                continue
            crop = _crop(rgb, face, border)
            if transform is not None:
                crop = transform(crop)
            crops.append(predictor.prepare(crop))
        preds = predictor.predict_crops(np.stack(crops))
        pred = np.array([p.age for p in preds])
        err = pred - ages[has]
        results[name] = {"mae": float(np.abs(err).mean()), "bias": float(err.mean()), "ages": pred.round(2).tolist()}
        kids = ages[has] < 20
        print(f"{name:>16}: MAE {np.abs(err).mean():.2f} bias {err.mean():+.2f} | <20 {np.abs(err[kids]).mean():.2f}/"
              f"{err[kids].mean():+.2f} | 20+ {np.abs(err[~kids]).mean():.2f}/{err[~kids].mean():+.2f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results))


def _crop(rgb, face, border):
    import math
    from agegender.serving.faces import crop_box
    cx, cy, side, angle = crop_box(face)
    native = max(1, int(round(side)))
    s = native / side
    rad = math.radians(angle)
    cos, sin = math.cos(rad) / s, math.sin(rad) / s
    half = native / 2.0
    matrix = np.array([[cos, -sin, cx - cos * half + sin * half], [sin, cos, cy - sin * half - cos * half]])
    return cv2.warpAffine(rgb, matrix, (native, native), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=border)


if __name__ == "__main__":
    main()
