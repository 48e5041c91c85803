"""Predictions from a served model: batched inference, test-time views and the age ranges a card asks for.

Serving a TFLite export imports neither Keras nor any model builder from here: Keras is imported inside the
functions that need it, only when a Keras model (or a zoomed test-time view) is asked for.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

RANGE_TAIL = 0.1  # the age range is meant to leave 10 % of true ages below it and 10 % above: what calibration aims at
RANGE_QUANTILES = (RANGE_TAIL, 1 - RANGE_TAIL)  # the nominal range, the central 80 % of the distribution, uncalibrated

if TYPE_CHECKING:
    import keras

    from .litert import TFLiteModel


def tta_settings(card: dict) -> dict[str, Any]:
    """The test-time views a model card asks for, as keyword arguments of :func:`predict_arrays`.

    ``tta_settings({})`` is the image alone (no mirror, no zooms).
    """
    return {"tta_flip": bool(card.get("tta_flip", False)), "tta_zoom": tuple(card.get("tta_zoom", ()))}


def centre_zoom(images: np.ndarray, zoom: float) -> np.ndarray:
    """The centre ``zoom`` share of each image resized back to full size (``zoom < 1`` moves closer).

    ``zoom > 1`` pads with black, as the training augmentation's zoom-out does.
    """
    size = images.shape[1]
    side = int(round(size * zoom))
    if side == size:
        return images
    if side < size:
        start = (size - side) // 2
        crop = images[:, start:start + side, start:start + side, :]
    else:
        pad = (side - size) // 2
        crop = np.pad(images, ((0, 0), (pad, side - size - pad), (pad, side - size - pad), (0, 0)))
    import keras  # only for zoomed views: a TFLite model served without them never imports Keras

    resized = keras.ops.image.resize(np.asarray(crop, dtype="float32"), (size, images.shape[2]), interpolation="bilinear")
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype="float32")


def predict_arrays(model: "keras.Model | TFLiteModel", images: np.ndarray, *, batch_size: int = 256,
                   tta_flip: bool = False, tta_zoom: tuple[float, ...] = ()) -> dict[str, np.ndarray]:
    """Ages (years), P(female) and, for distribution models, the age distribution.

    Calls a compiled inference function directly on batches (no ``model.predict``
    overhead). Test-time views go through in the same call as the image and their
    predictions are averaged: ``tta_zoom`` adds centre zooms (:func:`centre_zoom`),
    ``tta_flip`` the mirror of every view.
    """
    infer = _inference_function(model)
    ages, probs, dists = [], [], []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], dtype="float32")
        n = len(batch)
        views = [batch] + [centre_zoom(batch, zoom) for zoom in tta_zoom]
        if tta_flip:
            views += [view[:, :, ::-1, :] for view in views]
        out = {k: np.asarray(v) for k, v in infer(np.concatenate(views) if len(views) > 1 else batch).items()}
        out = {k: v.reshape(len(views), n, *v.shape[1:]).mean(axis=0) for k, v in out.items()}
        ages.append(out["age_out"].reshape(-1))
        probs.append(out["gender_out"].reshape(-1))
        if "age_dist" in out:
            dists.append(out["age_dist"])
    result = {"age": np.concatenate(ages), "p_female": np.concatenate(probs)}
    if dists:
        result["age_dist"] = np.concatenate(dists)
    return result


_COMPILED: "weakref.WeakKeyDictionary[keras.Model, object]" = weakref.WeakKeyDictionary()


def predict_frame(model: "keras.Model | TFLiteModel", card: dict, frame, *, batch_size: int = 256,
                  progress: bool = False):
    """The faces of ``frame`` (rows of :func:`agegender.data.load_utkface`) decoded and predicted as ``card`` serves
    them (input size, colour, resize, test-time views): ``(rows that decoded, predictions, decoding errors)``."""
    from ..data.preprocess import load_split_arrays
    from .modelio import input_resize

    spec = card["input"]
    images, rows, errors = load_split_arrays(frame, spec["image_size"], spec["color_mode"], resize=input_resize(card),
                                             progress=progress)
    return rows, predict_arrays(model, images, batch_size=batch_size, **tta_settings(card)), errors


def _inference_function(model: keras.Model):
    """``model(x, training=False)`` compiled once per model (any batch size), numpy in and out.

    An eager call of a 300-layer model costs ~10x more than the compiled graph on a CPU.
    """
    from .litert import TFLiteModel

    if isinstance(model, TFLiteModel):  # an export answers directly, no graph to compile
        return model.infer
    import keras  # a Keras model was passed, so Keras is loaded already

    if model not in _COMPILED:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
            # autograph=False: a plain call has no Python control flow to convert (and AutoGraph can't read lambdas)
            graph = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
            _COMPILED[model] = lambda x: {k: v.numpy() for k, v in graph(x).items()}
        else:
            _COMPILED[model] = lambda x: {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    return _COMPILED[model]


def age_ranges(age_dist: np.ndarray, quantiles: tuple[float, float] = RANGE_QUANTILES) -> tuple[np.ndarray, np.ndarray]:
    """Low and high ends (years) of each predicted age distribution between its two ``quantiles``."""
    cdf = np.cumsum(np.asarray(age_dist, dtype=float), axis=-1)
    low, high = ((cdf < q).sum(axis=-1).astype(float) for q in quantiles)  # = np.searchsorted per row
    return low, high


def card_range_quantiles(card: dict) -> tuple[float, float]:
    """The quantiles of the age range a model serves: those its card's val metrics were measured with
    (calibrated on val since the calibration was added), else the nominal ``RANGE_QUANTILES``."""
    quantiles = card.get("metrics", {}).get("val", {}).get("age_range", {}).get("quantiles")
    return (float(quantiles[0]), float(quantiles[1])) if quantiles else RANGE_QUANTILES
