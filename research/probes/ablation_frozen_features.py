"""Cheap ablations on frozen ImageNet EfficientNet-Lite0 features: input size, colour, age head.

Backbone features (1280-d, global average pooled) are computed once per input setting and cached
in memory; the heads then train in seconds, so input and head choices can be compared on the
same split before spending CPU time on fine-tuning. Figures are on the validation split (the
test split is kept for the final model).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/ablation_frozen_features.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from agegender.data import load_utkface  # noqa: E402
from agegender.data.pipeline import soft_age_labels  # noqa: E402
from agegender.data.preprocess import load_split_arrays  # noqa: E402
from agegender.models import AGE_BINS, ExpectedAge  # noqa: E402
from agegender.models.backbones.efficientnet_lite import build_efficientnet_lite0, default_weights_path  # noqa: E402


def features(frame, size: int, color_mode: str) -> tuple[np.ndarray, object]:
    images, rows, _ = load_split_arrays(frame, size, color_mode, progress=False)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    backbone = build_efficientnet_lite0((size, size, 3), weights=default_weights_path(), pooling="avg")
    out = [keras.ops.convert_to_numpy(backbone(images[i:i + 256].astype("float32"), training=False))
           for i in range(0, len(images), 256)]
    return np.concatenate(out), rows


def head_model(distribution: bool) -> keras.Model:
    inputs = keras.Input((1280,))
    x = layers.Dropout(0.3)(inputs)
    gender = layers.Dense(1, activation="sigmoid", name="gender_out")(layers.Dense(256, activation="relu")(x))
    age_hidden = layers.Dense(256, activation="relu")(x)
    outputs = {"gender_out": gender}
    losses = {"gender_out": "binary_crossentropy"}
    if distribution:
        dist = layers.Dense(AGE_BINS, activation="softmax", name="age_dist")(age_hidden)
        outputs.update(age_dist=dist, age_out=ExpectedAge(name="age_out")(dist))
        losses.update(age_dist=keras.losses.KLDivergence(), age_out="mae")
        weights = {"gender_out": 1.0, "age_dist": 1.0, "age_out": 0.1}
    else:
        outputs["age_out"] = layers.Dense(1, name="age_out")(age_hidden)
        losses["age_out"] = "mae"
        weights = {"gender_out": 1.0, "age_out": 1.0}
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), loss=losses, loss_weights=weights)
    return model


def fit_head(train, val, distribution: bool) -> tuple[float, float]:
    (xt, rt), (xv, rv) = train, val
    y = {"gender_out": rt.gender.to_numpy("float32"), "age_out": rt.age.to_numpy("float32")}
    if distribution:
        y["age_dist"] = soft_age_labels(rt.age.to_numpy()).numpy()
    keras.utils.set_random_seed(0)
    model = head_model(distribution)
    model.fit(xt, y, batch_size=256, epochs=30, verbose=0)
    out = model.predict(xv, batch_size=1024, verbose=0)
    mae = float(np.mean(np.abs(out["age_out"].ravel() - rv.age.to_numpy())))
    acc = float(np.mean((out["gender_out"].ravel() >= 0.5) == rv.gender.to_numpy()))
    return mae, acc


def main() -> None:
    frame = load_utkface()
    train, val = frame[frame.split == "train"], frame[frame.split == "val"]
    print(f"frozen EfficientNet-Lite0 (ImageNet) features, heads trained 30 epochs; validation split n={len(val)}")
    print(f"{'input':<16} {'age head':<14} {'val age MAE':>11} {'val gender acc':>15} {'features s':>11}")
    for size, color in ((96, "rgb"), (112, "rgb"), (128, "rgb"), (112, "grayscale")):
        start = time.perf_counter()
        ft, fv = features(train, size, color), features(val, size, color)
        seconds = time.perf_counter() - start
        for distribution in (False, True):
            mae, acc = fit_head(ft, fv, distribution)
            head = "distribution" if distribution else "regression"
            print(f"{f'{size}px {color}':<16} {head:<14} {mae:>11.2f} {100 * acc:>14.1f}% {seconds:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
