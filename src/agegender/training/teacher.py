"""A face-recognition teacher for training: cached dlib face descriptors as an extra target.

The descriptor network (dlib's ResNet, trained on millions of faces to tell people apart) carries gender and
age cues that 17k UTKFace crops cannot teach on their own. Running it costs ~100 ms per face and needs dlib, so
it never runs in this package: ``scripts/extract_face_descriptors.py`` computes the descriptors once (``make
teacher``), and training asks AgeNet to reproduce them from its own pooled features through a small extra head
(feature distillation). The head is dropped from the saved model, which stays as fast as before.
"""

from __future__ import annotations

import hashlib
import logging
import os

import keras
import numpy as np
import pandas as pd
from keras import layers

from ..config import project_path

log = logging.getLogger(__name__)

DESCRIPTOR_OUTPUT = "face_descriptor"
#: outputs a saved model keeps; anything else (the descriptor head) is training-only
INFERENCE_OUTPUTS = ("gender_out", "age_out", "age_dist")


class TeacherError(ValueError):
    """The teacher file is missing, damaged, or does not cover the training images."""


def load_descriptors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Base file name -> descriptor, from a file written by ``scripts/extract_face_descriptors.py``."""
    path = project_path(path)
    if not path.is_file():
        raise TeacherError(f"teacher descriptors {path} not found; create them with `make teacher` "
                           "(scripts/extract_face_descriptors.py, needs dlib in its own environment)")
    try:
        saved = np.load(path)
        names, descriptors = saved["name"], saved["descriptor"]
    except (OSError, ValueError, KeyError) as error:
        raise TeacherError(f"teacher descriptors {path} are unreadable ({error}); recreate them with `make teacher`")
    if descriptors.ndim != 2 or len(names) != len(descriptors):
        raise TeacherError(f"teacher descriptors {path}: expected one row per name, got {descriptors.shape} "
                           f"for {len(names)} names")
    return {str(name): row.astype("float32") for name, row in zip(names, descriptors)}


def descriptor_targets(rows: pd.DataFrame, descriptors: dict[str, np.ndarray], *, min_coverage: float = 0.99,
                       mean: np.ndarray | None = None, std: np.ndarray | None = None
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Standardised descriptors for ``rows`` (matched by file name) and the statistics used.

    Standardising per dimension puts the loss on the scale of the other heads. ``mean``/``std`` default to
    those of ``rows`` (pass the training split's for other splits). A face without a descriptor gets the mean
    (target 0), which teaches nothing in particular; more than ``1 - min_coverage`` of them is an error, since
    it means the teacher file belongs to other data.
    """
    found = rows["filename"].map(lambda name: name in descriptors).to_numpy()
    coverage = float(found.mean()) if len(found) else 0.0
    if coverage < min_coverage:
        raise TeacherError(f"the teacher covers {coverage:.1%} of these {len(rows)} faces (need "
                           f"{min_coverage:.0%}); recreate it for this data folder with `make teacher`")
    if not found.all():
        log.warning("%d faces have no teacher descriptor; their target is the mean", int((~found).sum()))
    dim = len(next(iter(descriptors.values())))
    raw = np.stack([descriptors.get(name, np.full(dim, np.nan, "float32")) for name in rows["filename"]])
    if mean is None or std is None:
        mean, std = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0) + 1e-6
    targets = np.nan_to_num((raw - mean) / std, nan=0.0).astype("float32")
    return targets, {"mean": mean, "std": std}


def with_descriptor_head(model: keras.Model, dim: int) -> keras.Model:
    """``model`` plus a linear head predicting the teacher's descriptor from the pooled backbone features."""
    features = _pooled_features(model)
    descriptor = layers.Dense(dim, name=DESCRIPTOR_OUTPUT)(features)
    outputs = {name: model.get_layer(name).output for name in model.output_names}
    return keras.Model(model.input, {**outputs, DESCRIPTOR_OUTPUT: descriptor}, name=model.name)


def _pooled_features(model: keras.Model):
    """The pooled backbone features both heads read (before AgeNet's feature dropout)."""
    names = {layer.name for layer in model.layers}
    if "feature_dropout" in names:  # AgeNet
        return model.get_layer("feature_dropout").input
    if "gap" in names:  # the small residual CNN
        return model.get_layer("gap").output
    raise TeacherError(f"model {model.name!r} has no pooled feature layer ('feature_dropout' or 'gap') "
                       "for a teacher head")


def without_training_heads(model: keras.Model) -> keras.Model:
    """The same network (shared weights) with only the outputs a saved model serves."""
    if all(name in INFERENCE_OUTPUTS for name in model.output_names):
        return model
    outputs = {name: model.get_layer(name).output for name in model.output_names if name in INFERENCE_OUTPUTS}
    return keras.Model(model.input, outputs, name=model.name)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-z))


def logit(p: np.ndarray) -> np.ndarray:
    """The inverse of :func:`sigmoid`, with ``p`` kept inside (1e-6, 1 - 1e-6)."""
    p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iterations: int = 30) -> np.ndarray:
    """Weights of an L2-regularised logistic regression, by Newton's method (IRLS).

    ``x``'s last column is the bias (all ones) and is not penalised. A few seconds for 129 parameters and
    ~17k faces; stops early once a step no longer moves any weight.
    """
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = sigmoid(x @ w)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, x.T @ (p - y) + penalty * w)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def gender_probabilities(descriptors: np.ndarray, genders: np.ndarray, names: pd.Series, *, folds: int = 5,
                         l2: float = 1.0, usable: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold P(female) of a logistic regression (``fit_logistic``) on the (standardised) descriptors.

    Each face's probability comes from a regression that never saw it (the fold is a hash of the file name, so
    it does not depend on which other files are present); otherwise the teacher would simply repeat the labels.
    Only ``usable`` faces (default: all; pass those with a real descriptor) are fitted on.
    """
    usable = np.ones(len(descriptors), bool) if usable is None else np.asarray(usable, dtype=bool)
    features = np.hstack([descriptors.astype("float64"), np.ones((len(descriptors), 1))])
    labels = np.asarray(genders, dtype="float64")
    fold = names.map(lambda name: int(hashlib.sha1(str(name).encode()).hexdigest(), 16) % folds).to_numpy()
    probabilities = np.empty(len(features))
    for k in range(folds):
        held_out = fold == k
        if held_out.any():
            w = fit_logistic(features[(fold != k) & usable], labels[(fold != k) & usable], l2=l2)
            probabilities[held_out] = sigmoid(features[held_out] @ w)
    return probabilities.astype("float32")


def mixed_faces(ages: np.ndarray, has_descriptor: np.ndarray, min_age: int) -> np.ndarray:
    """Which faces get a target mixed with the teacher's: aged ``min_age`` or more and with a descriptor."""
    return (np.asarray(ages) >= min_age) & np.asarray(has_descriptor, dtype=bool)


def distilled_gender_targets(genders: np.ndarray, ages: np.ndarray, probabilities: np.ndarray, has_descriptor:
                             np.ndarray, *, weight: float, min_age: int) -> np.ndarray:
    """Training targets for the gender head: ``(1 - weight) * label + weight * teacher`` from ``min_age`` on.

    The descriptor tells adults' gender well (97 % held out) but children's poorly (68 %), so younger faces, and
    faces the teacher has no descriptor for, keep their label.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"teacher_gender_weight must be between 0 and 1, not {weight}")
    targets = np.asarray(genders, dtype="float32").copy()
    use = mixed_faces(ages, has_descriptor, min_age)
    targets[use] = (1.0 - weight) * targets[use] + weight * probabilities[use]
    return targets
