"""Would face-recognition features help gender? A probe with dlib's 128-D face descriptor.

dlib's ResNet face descriptor ships inside the PyPI package ``face_recognition_models`` (no download at run
time). This script fits a logistic regression for gender on the descriptors of every third training face and
reports it alone and combined with AgeNet's P(female) (a weighted sum of logits, weight chosen on val); then the
same for age, with a ridge regression of log(1 + age) combined with AgeNet's age (a weighted mean). dlib is
not a project dependency: ``make teacher`` computes the descriptors once in its own environment
(``scripts/extract_face_descriptors.py``, the same file the distillation recipe ``research/configs/agenet_v10.json`` reads):

    make teacher
    UTKFACE_DIR=... .venv/bin/python research/probes/face_descriptor_probe.py [--model models/agenet.keras]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

TRAIN_EVERY = 3  # a logistic regression on 128 features needs a few thousand faces, not all 17,075
ALPHAS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)  # weight of AgeNet's logit in the combination (1.0 = AgeNet alone)
AGE_ALPHAS = (0.6, 0.8, 0.9, 1.0)  # weight of AgeNet's age in the combination (0.0, the descriptor alone, is printed first)
TEACHER = "data/teacher/dlib_descriptors.npz"  # written by `make teacher`


def fit_ridge(x: np.ndarray, y: np.ndarray, *, l2: float = 10.0) -> np.ndarray:
    """Least squares with an L2 penalty on every weight but the last (the bias column of ``x``)."""
    penalty = l2 * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


def probe(model_path: str, teacher: str = TEACHER) -> None:
    sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits (shared with benchmarks/)
    from _splits import predict_splits

    from agegender.config import AGE_BANDS
    from agegender.data import load_utkface
    from agegender.models.face_gender import fit_regression
    from agegender.training.teacher import load_descriptors, logit, sigmoid

    _, _, child_max_age = AGE_BANDS[0]  # the report's first band, 0-12

    descriptors = load_descriptors(teacher)
    frame = load_utkface()
    train_rows = frame[frame["split"] == "train"].iloc[::TRAIN_EVERY]
    agenet = predict_splits(model_path)

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        names, genders = ((train_rows["filename"], train_rows["gender"]) if name == "train"
                          else (agenet[name]["filename"], agenet[name]["gender"]))
        return np.stack([descriptors[n] for n in names]), np.asarray(genders)

    x_train, y_train = split("train")
    mean, std = x_train.mean(0), x_train.std(0)
    features = lambda x: np.c_[(x - mean) / std, np.ones(len(x))]  # noqa: E731
    kernel, bias = fit_regression(x_train, y_train)  # the regression the default model serves
    print(f"gender accuracy %, {len(x_train)} training faces for the regression; model {model_path}")
    print(f"{'split':<5} {'dlib alone':>10} {'0-12':>6} {'13+':>6} "
          + " ".join(f"{'a=' + str(a):>6}" for a in ALPHAS))
    best_alpha = None
    for name in ("val", "test"):
        x, y = split(name)
        p_dlib = sigmoid(x @ kernel + bias)
        kid = agenet[name]["age"] <= child_max_age
        right = (p_dlib > 0.5) == y
        combined = {a: 100 * np.mean((a * logit(agenet[name]["p_female"]) + (1 - a) * logit(p_dlib) > 0) == y)
                    for a in ALPHAS}
        if name == "val":
            best_alpha = max(ALPHAS, key=lambda a: combined[a])
        print(f"{name:<5} {100 * right.mean():10.2f} {100 * right[kid].mean():6.1f} {100 * right[~kid].mean():6.1f} "
              + " ".join(f"{combined[a]:6.2f}" for a in ALPHAS))
    print(f"a = weight of AgeNet's logit (1.0: AgeNet alone); best on val: a={best_alpha}")

    # Age: does the descriptor know what AgeNet gets wrong, the 60+ band above all?
    old_band, old_min_age, _ = AGE_BANDS[-1]  # the report's last band, 60+
    w_age = fit_ridge(features(x_train), np.log1p(train_rows["age"].to_numpy(dtype=float)))
    print(f"\nage MAE (years) overall / {old_band}; ridge on log(1 + age), same training faces")
    print(f"{'split':<5} {'dlib alone':>13} " + " ".join(f"{'a=' + str(a):>13}" for a in AGE_ALPHAS))
    for name in ("val", "test"):
        x, _ = split(name)
        age, pred = agenet[name]["age"], agenet[name]["pred_age"]
        old = age >= old_min_age
        dlib_age = np.expm1(features(x) @ w_age)
        cells = []
        for a in (0.0, *AGE_ALPHAS):
            error = np.abs(a * pred + (1 - a) * dlib_age - age)
            cells.append(f"{error.mean():6.2f}/{error[old].mean():6.2f}")
        print(f"{name:<5} " + " ".join(f"{c:>13}" for c in cells))
    print("a = weight of AgeNet's age (1.0: AgeNet alone)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/agenet.keras")
    parser.add_argument("--teacher", default=TEACHER, help="descriptor file written by `make teacher`")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    probe(args.model, args.teacher)


if __name__ == "__main__":
    main()
