"""Do our ages rise with the face's resolution in the photo? Bias by the native side of the served crop on FG-NET.

The maintainers' private set showed it: larger photos of the same kind were read +3.4 y too old against +1.0 y for
smaller ones. FG-NET's faces span 40-500 px, so it shows the same dependence. For each model given, the largest face
of every photo is cropped as served and predicted; photos are split into thirds by the crop's native side (pixels of
the photo the crop covers) and the bias of each third is printed, with the slope of the error against log2(side)
(years per doubling of the resolution; bootstrap over persons for its SE). Detection runs once.

Then the paired test: every photo shrunk by each of ``--factors`` (2: half its width and height; area), detected and
predicted again; the mean of (age at full size - age shrunk) over the same faces says how much a model's ages rise
when only the resolution grows (SE over persons), overall and by third. FG-NET's faces are 200-500 px, above the
model's 128 px input, so only a factor that takes them below 128 px can show a difference.

    FGNET_DIR=... .venv/bin/python research/probes/resolution_bias.py ../shared/datasets/fgnet MODEL [MODEL ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from agegender.evaluation.photos import largest_face_index
from agegender.serving.faces import crop_box, crop_face
from agegender.serving.predict import Predictor
from _photos import largest_faces


def slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--out", default="runs/resolution_bias.json")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--factors", default="2,4", help="comma-separated shrink factors for the paired test")
    args = parser.parse_args()
    predictors = [Predictor.load(m) for m in args.models]
    photos, found = largest_faces(predictors[0], args.folder)
    keep = [(p, rgb, f) for p, (rgb, f) in zip(photos, found) if f is not None]
    ages = np.array([p.age for p, _, _ in keep], float)
    persons = np.array([p.subject or p.file for p, _, _ in keep])
    sides = np.array([crop_box(f)[2] for _, _, f in keep])
    edges = np.quantile(sides, [1 / 3, 2 / 3])
    third = np.digitize(sides, edges)
    print(f"{len(keep)} faces; native crop side thirds: < {edges[0]:.0f} px, {edges[0]:.0f}-{edges[1]:.0f}, "
          f">= {edges[1]:.0f} (median {np.median(sides):.0f})")
    rng = np.random.default_rng(0)
    groups = {g: np.flatnonzero(persons == g) for g in np.unique(persons)}
    names = list(groups)
    factors = [int(f) for f in args.factors.split(",")]
    shrunk = {}  # factor -> [(photo shrunk, its largest face or None)]
    for factor in factors:
        shrunk[factor] = []
        for _, rgb, _ in keep:
            small = cv2.resize(rgb, (max(1, rgb.shape[1] // factor), max(1, rgb.shape[0] // factor)),
                               interpolation=cv2.INTER_AREA)
            faces = predictors[0].detector.detect(small)
            shrunk[factor].append((small, faces[largest_face_index([f.box for f in faces])] if faces else None))
        found_again = sum(f is not None for _, f in shrunk[factor])
        print(f"shrunk {factor}x: {found_again} of {len(keep)} faces found again (median side "
              f"{np.median(sides) / factor:.0f} px)")
    results = {"sides": sides.round(1).tolist(), "edges": edges.tolist(), "models": {}}
    for path, predictor in zip(args.models, predictors):
        crops = np.stack([predictor.prepare(crop_face(rgb, f)) for _, rgb, f in keep])
        pred = np.array([p.age for p in predictor.predict_crops(crops)])
        err = pred - ages
        x = np.log2(sides)
        boots = []
        for _ in range(args.boot):
            idx = np.concatenate([groups[names[i]] for i in rng.integers(0, len(names), len(names))])
            boots.append(slope(x[idx], err[idx]))
        by_third = [(float(np.abs(err[third == k]).mean()), float(err[third == k].mean())) for k in range(3)]
        s, se = slope(x, err), float(np.std(boots))
        rises = {}
        for factor, pairs in shrunk.items():
            found_again = np.array([f is not None for _, f in pairs])
            other = np.full(len(keep), np.nan)
            other_crops = np.stack([predictor.prepare(crop_face(small, f)) for small, f in pairs if f is not None])
            other[found_again] = [p.age for p in predictor.predict_crops(other_crops)]
            rise = pred - other
            boots = [np.nanmean(rise[np.concatenate([groups[names[i]]
                                                     for i in rng.integers(0, len(names), len(names))])])
                     for _ in range(200)]
            rises[factor] = {"mean": float(np.nanmean(rise)), "se": float(np.std(boots)),
                             "by_third": [float(np.nanmean(rise[third == k])) for k in range(3)]}
            print(f"{path}: age at full size - age shrunk {factor}x {np.nanmean(rise):+.2f} y (SE {np.std(boots):.2f}); "
                  f"by third {' / '.join(f'{r:+.2f}' for r in rises[factor]['by_third'])}")
        results["models"][path] = {"rise_full_vs_shrunk": rises, "mae": float(np.abs(err).mean()),
                                   "bias": float(err.mean()), "by_third": by_third,
                                   "slope_per_doubling": s, "slope_se": se, "ages": pred.round(2).tolist()}
        thirds = " | ".join(f"{m:.2f} / {b:+.2f}" for m, b in by_third)
        print(f"{path}: MAE {np.abs(err).mean():.2f} bias {err.mean():+.2f} | by third (MAE / bias): {thirds} | "
              f"bias per doubling of side {s:+.2f} y (SE {se:.2f})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
