"""Would face-recognition features help gender? A probe with dlib's 128-D face descriptor.

dlib's ResNet face descriptor ships inside the PyPI package ``face_recognition_models`` (no download at run
time). This script fits a logistic regression for gender on the descriptors of training faces and reports it
alone and combined with AgeNet's P(female) (a weighted sum of logits, weight chosen on val). It needs dlib,
which the project does not depend on, so it runs in two steps, in two environments:

    python3 -m venv .venv-dlib && .venv-dlib/bin/pip install dlib-bin face_recognition_models pillow numpy
    UTKFACE_DIR=... .venv/bin/python benchmarks/face_descriptor_probe.py write-list   # the project's split
    .venv-dlib/bin/python benchmarks/face_descriptor_probe.py extract   # data/cache/dlib_descriptors.npz
    UTKFACE_DIR=... .venv/bin/python benchmarks/face_descriptor_probe.py probe [--model models/agenet.keras]

The file list holds every third training face and all val and test faces.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parents[1] / "data" / "cache"
FILE_LIST = CACHE / "dlib_probe_files.csv"
DESCRIPTORS = CACHE / "dlib_descriptors.npz"
TRAIN_EVERY = 3  # a logistic regression on 128 features needs a few thousand faces, not all 17,075
ALPHAS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)  # weight of AgeNet's logit in the combination (1.0 = AgeNet alone)
FACE_BOX = (0.1, 0.9)  # UTKFace crops: the face fills about the central 80 % (box for dlib's landmark model)


def write_list() -> None:
    import pandas as pd

    from agegender.data import load_utkface

    frame = load_utkface()
    train = frame[frame["split"] == "train"].iloc[::TRAIN_EVERY]
    rows = [train] + [frame[frame["split"] == s] for s in ("val", "test")]
    CACHE.mkdir(parents=True, exist_ok=True)
    pd.concat(rows)[["path", "age", "gender", "split"]].to_csv(FILE_LIST, index=False)
    print(f"{FILE_LIST}: {sum(len(r) for r in rows)} faces")


def extract() -> None:
    import dlib
    import face_recognition_models as models
    from PIL import Image

    rows = list(csv.DictReader(FILE_LIST.open()))
    landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    descriptors, start = [], time.time()
    for i, row in enumerate(rows):
        image = np.asarray(Image.open(row["path"]).convert("RGB"))
        h, w = image.shape[:2]
        box = dlib.rectangle(int(FACE_BOX[0] * w), int(FACE_BOX[0] * h), int(FACE_BOX[1] * w), int(FACE_BOX[1] * h))
        descriptors.append(np.array(net.compute_face_descriptor(image, landmarks(image, box)), dtype=np.float32))
        if i % 1000 == 0:
            print(f"{i}/{len(rows)} {time.time() - start:.0f} s", flush=True)
    np.savez(DESCRIPTORS, descriptor=np.stack(descriptors), path=np.array([r["path"] for r in rows]))
    print(f"{DESCRIPTORS}: {len(rows)} descriptors, {1000 * (time.time() - start) / len(rows):.0f} ms per face")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 30) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; ``x`` already has a bias column."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = sigmoid(x @ w)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, x.T @ (p - y) + l2 * w)
    return w


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def probe(model_path: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _splits import predict_splits

    from agegender.config import AGE_BANDS

    _, _, child_max_age = AGE_BANDS[0]  # the report's first band, 0-12

    saved = np.load(DESCRIPTORS)
    by_path = dict(zip(saved["path"], saved["descriptor"]))
    rows = list(csv.DictReader(FILE_LIST.open()))

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        part = [r for r in rows if r["split"] == name]
        return np.stack([by_path[r["path"]] for r in part]), np.array([int(r["gender"]) for r in part])

    x_train, y_train = split("train")
    mean, std = x_train.mean(0), x_train.std(0)
    features = lambda x: np.c_[(x - mean) / std, np.ones(len(x))]  # noqa: E731
    w = fit_logistic(features(x_train), y_train)
    agenet = predict_splits(model_path)
    print(f"gender accuracy %, {len(x_train)} training faces for the regression; model {model_path}")
    print(f"{'split':<5} {'dlib alone':>10} {'0-12':>6} {'13+':>6} "
          + " ".join(f"{'a=' + str(a):>6}" for a in ALPHAS))
    best_alpha = None
    for name in ("val", "test"):
        x, y = split(name)
        assert (y == agenet[name]["gender"]).all(), "file list and the project's split disagree"
        p_dlib = sigmoid(features(x) @ w)
        kid = agenet[name]["age"] <= child_max_age
        right = (p_dlib > 0.5) == y
        combined = {a: 100 * np.mean((a * logit(agenet[name]["p_female"]) + (1 - a) * logit(p_dlib) > 0) == y)
                    for a in ALPHAS}
        if name == "val":
            best_alpha = max(ALPHAS, key=lambda a: combined[a])
        print(f"{name:<5} {100 * right.mean():10.2f} {100 * right[kid].mean():6.1f} {100 * right[~kid].mean():6.1f} "
              + " ".join(f"{combined[a]:6.2f}" for a in ALPHAS))
    print(f"a = weight of AgeNet's logit (1.0: AgeNet alone); best on val: a={best_alpha}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["write-list", "extract", "probe"])
    parser.add_argument("--model", default="models/agenet.keras")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    {"write-list": write_list, "extract": extract, "probe": lambda: probe(args.model)}[args.step]()


if __name__ == "__main__":
    main()
