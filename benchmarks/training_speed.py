"""Seed-CNN training throughput on this CPU: the popular notebook's way vs the project's pipeline.

Each variant runs in its own subprocess on the same 2,048 real training images (128x128 grayscale),
with a warm-up, then a timed number of steps; seconds/epoch is projected for the 17,075 training images
of the full split. Backends other than TensorFlow are measured when installed (``pip install jax``).

    UTKFACE_DIR=/path/to/UTKFace python benchmarks/training_speed.py [--steps 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

TRAIN_IMAGES = 17_075

CODE = r"""
import json, os, sys, time
import numpy as np
import keras
from agegender.config import TrainConfig
from agegender.data import load_utkface
from agegender.data.preprocess import load_images
from agegender.models import build_seed_cnn
from agegender.training.loop import compile_model
variant, steps = sys.argv[1], int(sys.argv[2])
frame = load_utkface().query("split == 'train'").head(2048)
images = load_images(frame.path, 128, "grayscale", progress=False).images
ages, genders = frame.age.to_numpy(), frame.gender.to_numpy()
model = build_seed_cnn()
if variant == "popular":
    # the notebook: float64 features / 255 in memory, model.fit on numpy arrays, batch 32
    model.compile(optimizer="adam", loss=["binary_crossentropy", "mae"], metrics=["accuracy", "mae"])
    x = images.astype("float64")  # the notebook's float64 features (it scales by 1/255 first; our model rescales inside)
    y = {"gender_out": genders.astype("float64"), "age_out": ages.astype("float64")}
    batch = 32
    fit = lambda n: model.fit(x[: n * batch], {k: v[: n * batch] for k, v in y.items()}, batch_size=batch, epochs=1, verbose=0)
else:
    from agegender.data.pipeline import make_dataset
    batch = int(variant.split("_")[-1])
    compile_model(model, TrainConfig(batch_size=batch), 100)
    ds = make_dataset(images, ages, genders, batch_size=batch, training=True).repeat()
    fit = lambda n: model.fit(ds, steps_per_epoch=n, epochs=1, verbose=0)
fit(3)
start = time.perf_counter()
fit(steps)
seconds = time.perf_counter() - start
print(json.dumps({"images_per_second": steps * batch / seconds, "backend": keras.backend.backend(), "batch": batch}))
"""


def measure(variant: str, steps: int, backend: str = "tensorflow") -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", CODE, variant, str(steps)], env=env, capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    runs = [("popular: numpy float64, batch 32", "popular", "tensorflow"),
            ("agegender: tf.data uint8, batch 64", "ours_64", "tensorflow"),
            ("agegender: tf.data uint8, batch 128", "ours_128", "tensorflow")]
    if importlib.util.find_spec("jax"):
        runs.append(("agegender on the JAX backend, batch 64", "ours_64", "jax"))
    print(f"seed CNN training throughput, {os.cpu_count()} CPUs, {args.steps} timed steps after warm-up")
    print(f"{'variant':<40} {'images/s':>9} {'s/epoch (17,075 images)':>24}")
    for label, variant, backend in runs:
        result = measure(variant, args.steps, backend)
        if "error" in result:
            print(f"{label:<40} failed: {result['error']}")
            continue
        ips = result["images_per_second"]
        print(f"{label:<40} {ips:>9.1f} {TRAIN_IMAGES / ips:>24.0f}")


if __name__ == "__main__":
    main()
