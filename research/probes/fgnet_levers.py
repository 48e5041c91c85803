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


def contrast(factor):
    def f(crop):
        mean = crop.reshape(-1, 3).mean(axis=0)
        return np.clip(mean + factor * (crop.astype(np.float32) - mean), 0, 255).astype(np.uint8)
    return f


def clahe(crop):
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


VARIANTS = {
    "base": (cv2.BORDER_REPLICATE, None),
    "scale085": (cv2.BORDER_REPLICATE, 0.85),
    "scale115": (cv2.BORDER_REPLICATE, 1.15),
    "scale130": (cv2.BORDER_REPLICATE, 1.30),
    "contrast08": (cv2.BORDER_REPLICATE, contrast(0.8)),
    "contrast12": (cv2.BORDER_REPLICATE, contrast(1.2)),
    "clahe": (cv2.BORDER_REPLICATE, clahe),
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
            scale = transform if isinstance(transform, float) else 1.0
            crop = _crop(rgb, face, border, scale)
            if transform is not None and not isinstance(transform, float):
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


def _crop(rgb, face, border, scale=1.0):
    """The served crop at native size; ``scale`` widens (> 1) or tightens (< 1) it about its centre."""
    import math
    from agegender.serving.faces import crop_box
    cx, cy, side, angle = crop_box(face)
    side *= scale
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
