"""How much do a model's ages rise with resolution alone? The same photos at full size and shrunk, no labels needed.

For every photo of the folders given, the largest face is detected and predicted at full size and again after the
photo is shrunk by each of ``--factors`` (area). The mean of (age at full size - age shrunk) over the photos where
the face is found both times is printed per model, with its SE over photos and the faces' native crop sides: a
resolution-invariant model gives about 0. Meant for sharp, modern photos (``wild_samples``), whose faces are much
larger than the model's 128 px input, unlike FG-NET's scans (``resolution_bias.py``).

    .venv/bin/python research/probes/resolution_rise.py FOLDER [FOLDER ...] --models MODEL [MODEL ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from agegender.data.images import ImageError, image_files_in, open_image
from agegender.evaluation.photos import largest_face_index
from agegender.serving.faces import crop_box, crop_face
from agegender.serving.predict import Predictor


def largest(predictor: Predictor, rgb: np.ndarray):
    faces = predictor.detector.detect(rgb)
    return faces[largest_face_index([f.box for f in faces])] if faces else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--factors", default="2,4")
    parser.add_argument("--out", default="runs/resolution_rise.json")
    args = parser.parse_args()
    predictors = [Predictor.load(m) for m in args.models]
    factors = [int(f) for f in args.factors.split(",")]
    photos = []  # (name, {factor: (rgb, face)}) with factor 1 the photo as it is
    for folder in args.folders:
        for path in image_files_in(folder):
            try:
                rgb = np.asarray(open_image(path))
            except ImageError:
                continue
            views = {1: (rgb, largest(predictors[0], rgb))}
            if views[1][1] is None:
                continue
            for factor in factors:
                small = cv2.resize(rgb, (max(1, rgb.shape[1] // factor), max(1, rgb.shape[0] // factor)),
                                   interpolation=cv2.INTER_AREA)
                views[factor] = (small, largest(predictors[0], small))
            photos.append((Path(path).name, views))
    sides = np.array([crop_box(views[1][1])[2] for _, views in photos])
    print(f"{len(photos)} photos with a face; native crop side median {np.median(sides):.0f} px "
          f"(range {sides.min():.0f}-{sides.max():.0f})")
    results = {"photos": [name for name, _ in photos], "sides": sides.round(1).tolist(), "models": {}}
    for path, predictor in zip(args.models, predictors):
        ages = {}
        for factor in [1, *factors]:
            found = [(i, views[factor]) for i, (_, views) in enumerate(photos) if views[factor][1] is not None]
            crops = np.stack([predictor.prepare(crop_face(rgb, face)) for _, (rgb, face) in found])
            ages[factor] = np.full(len(photos), np.nan)
            ages[factor][[i for i, _ in found]] = [p.age for p in predictor.predict_crops(crops)]
        model = {}
        for factor in factors:
            rise = ages[1] - ages[factor]
            n = int(np.sum(~np.isnan(rise)))
            se = float(np.nanstd(rise, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            model[factor] = {"n": n, "mean": float(np.nanmean(rise)), "se": se,
                             "median_side": float(np.median(sides) / factor)}
            print(f"{path}: full size - shrunk {factor}x (faces about {np.median(sides) / factor:.0f} px): "
                  f"{np.nanmean(rise):+.2f} y (SE {se:.2f}, {n} photos)", flush=True)
        results["models"][path] = {"rise": model, "ages": {f: a.round(2).tolist() for f, a in ages.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
