"""How to read an age out of the predicted distribution: expectation, median or mode, per age band.

Prints age MAE and signed bias (predicted minus true) per band on val and test for each read-out.
Choose on val; test is shown to confirm. Beside the plain read-outs, the median of the distribution divided
by the training set's age prior to a power beta ("logit adjustment", Menon et al. 2021): it moves
predictions away from the crowded 20-39 years, which is what the rare bands' signed biases ask for.
A second table splits the 60+ band by decade (model's own read-out): a few faces labelled 90 or older
weigh heavily in that band's MAE; a third names the band's worst faces; a last one splits each band's MAE into
bias and spread: the MAE left if the band's own median error were subtracted from its faces, a bound no read-out
or loss weighting that shifts predictions can beat (the shift would need to know the true band).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/age_readout.py [--model models/agenet.keras]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits (shared with benchmarks/)

import numpy as np  # noqa: E402
from _splits import predict_splits  # noqa: E402

from agegender.config import AGE_BANDS, default_model_path  # noqa: E402
from agegender.data import load_utkface  # noqa: E402


OLD_AGES = (("60-69", 60, 69), ("70-79", 70, 79), ("80-89", 80, 89), ("90+", 90, 200))
PRIOR_POWERS = (0.1, 0.2, 0.3, 0.5)
WORST_FACES = 3


def age_prior(train_ages: np.ndarray, bins: int, smooth_years: float = 2.0) -> np.ndarray:
    """The training faces' age histogram, Gaussian-smoothed (no empty years), summing to 1."""
    counts = np.bincount(np.minimum(train_ages, bins - 1), minlength=bins).astype(float)
    years = np.arange(bins)
    kernel = np.exp(-0.5 * ((years[:, None] - years[None, :]) / smooth_years) ** 2)
    prior = kernel @ counts
    return prior / prior.sum()


def prior_adjusted(dist: np.ndarray, prior: np.ndarray, power: float) -> np.ndarray:
    """``dist * prior ** -power``, renormalised per row."""
    adjusted = dist * prior[None, :] ** -power
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def readouts(dist: np.ndarray) -> dict[str, np.ndarray]:
    """Expectation, interpolated median (each 1-year bin spread evenly over its year) and mode."""
    ages = np.arange(dist.shape[1])
    cdf = np.cumsum(dist, axis=1)
    k = np.minimum((cdf < 0.5).sum(axis=1), dist.shape[1] - 1)
    below = np.where(k > 0, cdf[np.arange(len(k)), k - 1], 0.0)
    median = k - 0.5 + (0.5 - below) / np.maximum(dist[np.arange(len(k)), k], 1e-12)
    return {"expectation": dist @ ages, "median": median, "mode": dist.argmax(axis=1).astype(float)}


def spread_mae(error: np.ndarray) -> float:
    """The MAE left after subtracting the errors' median, the best single shift for an MAE."""
    return float(np.abs(error - np.median(error)).mean())


def _print_by_age(preds: dict, groups: tuple, width: int, cell: Callable[[np.ndarray], str]) -> None:
    """One row per split, one cell per age group: ``cell`` of the signed errors (model's read-out) in that group."""
    print(f"{'split':<5} " + " ".join(f"{label:>{width}}" for label, _, _ in groups))
    for split, p in preds.items():
        error = p["pred_age"] - p["age"]
        cells = [cell(error[(p["age"] >= low) & (p["age"] <= high)]) for _, low, high in groups]
        print(f"{split:<5} " + " ".join(f"{c:>{width}}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    preds = predict_splits(args.model)
    if any("age_dist" not in p for p in preds.values()):
        raise SystemExit(f"{args.model} has no age distribution output")
    frame = load_utkface()
    prior = age_prior(frame.loc[frame["split"] == "train", "age"].to_numpy(), preds["val"]["age_dist"].shape[1])
    print(f"model {args.model}; cells: MAE (bias); band mean: the mean of the five bands' MAEs")
    print(f"{'split':<5} {'read-out':<12} {'all':>13}" + "".join(f" {label:>13}" for label, _, _ in AGE_BANDS)
          + f" {'band mean':>9}")
    for split, p in preds.items():
        candidates = readouts(p["age_dist"])
        for power in PRIOR_POWERS:
            candidates[f"median/p^{power}"] = readouts(prior_adjusted(p["age_dist"], prior, power))["median"]
        for name, age in candidates.items():
            error = age - p["age"]
            cells, band_maes = [f"{np.abs(error).mean():6.2f} ({error.mean():+5.2f})"], []
            for _, low, high in AGE_BANDS:
                band = (p["age"] >= low) & (p["age"] <= high)
                band_maes.append(np.abs(error[band]).mean())
                cells.append(f"{band_maes[-1]:6.2f} ({error[band].mean():+5.2f})")
            print(f"{split:<5} {name:<12} " + " ".join(f"{c:>13}" for c in cells) + f" {np.mean(band_maes):9.3f}")
    print("\nthe 60+ band by decade, the model's read-out; cells: n, MAE (bias)")
    _print_by_age(preds, OLD_AGES, 19, lambda e: f"{len(e):4d}, {np.abs(e).mean():5.2f} ({e.mean():+6.2f})")
    print(f"\nthe {WORST_FACES} largest errors in the 60+ band, and their share of the band's MAE")
    for split, p in preds.items():
        old = p["age"] >= AGE_BANDS[-1][1]
        error = np.abs(p["pred_age"] - p["age"])[old]
        for i in np.argsort(-error)[:WORST_FACES]:
            print(f"{split:<5} {p['filename'][old][i]:<40} true {p['age'][old][i]:3d}  predicted "
                  f"{p['pred_age'][old][i]:5.1f}  {error[i] / old.sum():.2f} of {error.mean():.2f} years")
    print("\neach band's MAE without its bias: MAE -> MAE after subtracting the band's own median error (an oracle)")
    _print_by_age(preds, AGE_BANDS, 15, lambda e: f"{np.abs(e).mean():5.2f} -> {spread_mae(e):5.2f}")


if __name__ == "__main__":
    main()
