"""Shared by the error analyses: a model's predictions on the val and test splits.

Used by ``resolution_robustness.py`` here and by the lab's scripts in ``research/``, which put this folder on
their path."""

from __future__ import annotations

import numpy as np
import pandas as pd

from agegender.data import load_utkface
from agegender.data.preprocess import load_split_arrays
from agegender.serving.inference import predict_frame
from agegender.serving.modelio import input_resize, load_serving_model


def split_arrays(card: dict, frame: pd.DataFrame, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The split's images as the model card's input spec says (size, colour, resize), and their label rows."""
    images, rows, _ = load_split_arrays(frame[frame["split"] == split], card["input"]["image_size"],
                                        card["input"]["color_mode"], resize=input_resize(card), progress=False)
    return images, rows


def predict_splits(model_path: str, splits: tuple[str, ...] = ("val", "test")) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"filename", "age", "gender" (true), "pred_age", "p_female"[, "age_dist"]}}``, served as the card says."""
    return predict_model_splits(*load_serving_model(model_path), splits)


def predict_model_splits(model, card: dict, splits: tuple[str, ...] = ("val", "test")) -> dict[str, dict[str, np.ndarray]]:
    """:func:`predict_splits` for a model already in memory, served as ``card`` says."""
    frame = load_utkface()
    result = {}
    for split in splits:
        rows, pred, _ = predict_frame(model, card, frame[frame["split"] == split])
        result[split] = {"filename": rows["filename"].to_numpy(), "age": rows["age"].to_numpy(), "gender": rows["gender"].to_numpy(),
                         "pred_age": pred["age"], "p_female": pred["p_female"],
                         **({"age_dist": pred["age_dist"]} if "age_dist" in pred else {})}
    return result
