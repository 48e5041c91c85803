"""Export a trained Keras model to TFLite with float16 weights, checked against the original.

The export sits beside the model (``models/agenet.keras`` -> ``models/agenet.tflite``) and is
recorded in the model card with the SHA-256 of the Keras file it came from, so a retrained model
never silently serves a stale export. Serving (:func:`agegender.serving.modelio.load_serving_model`)
prefers a matching export: it loads in milliseconds and a call costs a fraction of a Keras call.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .modelio import card_path, file_sha256, load_model, read_card, write_json_atomic

QUANTIZATIONS = ("float16", "none")
#: The export is refused if, on the check images, it moves the ages by more than MEAN_AGE_DIFF years
#: on average or any age by more than MAX_AGE_DIFF, any P(female) by more than MAX_PROB_DIFF, or, for
#: models that predict an age distribution, any distribution by a total variation above MAX_DIST_TV.
#: float16 weights move most ages by ~0.01 years; a median read-out can move a few faces by about half
#: a year, those whose predicted distribution is flat around its median (measured: up to 0.9). A barely
#: trained model has flat distributions everywhere: one epoch of the Lite2 recipe on 48 faces at 64 px (the
#: notebook test) moved its ages by 0.069 years on average, read-out and expectation alike, the trained
#: models by 0.006-0.02. The total variation does not depend on how flat the distributions are: 0.0104-0.0107
#: for the Lite2 defaults on 256 test faces, under 0.05 for the notebook's model too. A broken export moves
#: all of them by far more, so the limits are loose enough for float16 and far below a broken file.
MEAN_AGE_DIFF, MAX_AGE_DIFF, MAX_PROB_DIFF, MAX_DIST_TV = 0.15, 1.0, 0.02, 0.05


def tflite_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".tflite")


def convert(model, quantization: str = "float16") -> bytes:
    """TFLite flatbuffer of a Keras model (via a SavedModel, which keeps the weights and a dynamic batch)."""
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}")
    with tempfile.TemporaryDirectory() as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def export_tflite(model_path: str | os.PathLike, check_images: np.ndarray, *,
                  quantization: str = "float16") -> dict[str, Any]:
    """Write ``<model>.tflite`` atomically, compare it with the Keras model on ``check_images``
    (uint8 model inputs) and record the export in the model card. Returns the card's record."""
    from .inference import predict_arrays
    from .litert import TFLiteModel

    model_path = Path(model_path)
    model, card = load_model(model_path)
    if len(check_images) == 0:
        raise ValueError("export needs a few check images to compare the export with the model")
    out_path = tflite_path(model_path)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(convert(model, quantization))
        os.chmod(tmp, 0o644)
        keras_out = predict_arrays(model, check_images)
        lite_out = predict_arrays(TFLiteModel(tmp), check_images)
        diffs = prediction_differences(keras_out, lite_out)
        refusal = _refusal(diffs)
        if refusal:
            raise RuntimeError(f"the TFLite export differs from {model_path.name}: {refusal}; not written")
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    record = {"file": out_path.name, "quantization": quantization, "bytes": out_path.stat().st_size,
              "sha256": file_sha256(out_path), "source_sha256": file_sha256(model_path),
              "check": {"images": int(len(check_images)), **{k: round(v, 5) for k, v in diffs.items()}}}
    card["tflite"] = record
    write_json_atomic(card_path(model_path), card)
    return record


def prediction_differences(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, float]:
    """How far ``other``'s predictions (:func:`agegender.serving.inference.predict_arrays`) are from ``reference``'s
    on the same images: read-out ages, P(female), the share of faces given the same gender and, when both
    give one, the age distributions."""
    ages = np.abs(reference["age"] - other["age"])
    diffs = {"max_age_diff_years": float(ages.max()), "mean_age_diff_years": float(ages.mean()),
             "max_p_female_diff": float(np.abs(reference["p_female"] - other["p_female"]).max()),
             "gender_agreement": float(np.mean((reference["p_female"] >= 0.5) == (other["p_female"] >= 0.5)))}
    if "age_dist" in reference and "age_dist" in other:
        p, q = reference["age_dist"].astype("float64"), other["age_dist"].astype("float64")
        years = np.arange(p.shape[1])
        diffs["max_age_dist_tv"] = float(0.5 * np.abs(p - q).sum(axis=1).max())
        diffs["mean_expected_age_diff_years"] = float(np.abs(p @ years - q @ years).mean())
    return diffs


def _refusal(diffs: dict[str, float]) -> str | None:
    """Why an export with these differences from its model must not be written, or None."""
    limits = [("mean_age_diff_years", MEAN_AGE_DIFF, "years on average"),
              ("max_age_diff_years", MAX_AGE_DIFF, "years at most"),
              ("max_p_female_diff", MAX_PROB_DIFF, "in P(female) at most"),
              ("max_age_dist_tv", MAX_DIST_TV, "in total variation of an age distribution at most")]
    broken = [f"{key.replace('_', ' ')} {diffs[key]:.4f} ({what}: limit {limit})"
              for key, limit, what in limits if key in diffs and diffs[key] > limit]
    return "; ".join(broken) or None


def export_with_test_images(model_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                            check_images: int = 256, quantization: str = "float16") -> dict[str, Any]:
    """:func:`export_tflite`, checked on the first ``check_images`` test-split images of a UTKFace folder."""
    from ..data.preprocess import load_split_arrays
    from ..data.utkface import load_utkface
    from .modelio import input_resize

    card = read_card(model_path)
    frame = load_utkface(data_dir)
    check = frame[frame["split"] == "test"].head(check_images)
    if check.empty:
        check = frame.head(check_images)
    images, _, _ = load_split_arrays(check, card["input"]["image_size"], card["input"]["color_mode"],
                                     resize=input_resize(card), progress=False)
    return export_tflite(model_path, images, quantization=quantization)
