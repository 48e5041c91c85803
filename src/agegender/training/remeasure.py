"""A model's val and test figures measured again on the folder as it is split today, into its card.

The splits can change under a trained model: when the duplicate rules of :mod:`agegender.data.duplicates` came in,
val and test lost the copies of training files. ``agegender evaluate --update-card`` re-measures a shipped model's
card this way; the detail-cap stage measures its new model with the same function.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

import keras

from ..config import TrainConfig
from ..serving.inference import tta_settings
from ..serving.modelio import card_path, input_resize, load_model, require_same_data, write_json_atomic
from .loop import load_arrays, split_metrics


def measured_metrics(model: keras.Model, card: dict[str, Any], path: str | os.PathLike,
                     folder: str | os.PathLike | None = None) -> tuple[dict[str, dict], dict[str, Any]]:
    """``model`` (served as ``card`` says) on today's val and test splits of the data it was trained on: the card's
    ``metrics`` (val and test) and an ``evaluated_on`` record of the data measured."""
    # decoded as the model is served (cards older than the resize setting were trained with PIL's)
    config = dataclasses.replace(TrainConfig.from_dict(card["config"]), resize=input_resize(card))
    arrays, data_info = load_arrays(config, folder, decode=("val", "test"))
    require_same_data(card, path, data_info)
    metrics = split_metrics(model, tta_settings(card), arrays, arrays["train"][1],
                            card.get("data", {}).get("fit_splits", ["train"]))
    evaluated_on = {"fingerprint": data_info["fingerprint"], "used_counts": data_info["used_counts"],
                    "set_aside": data_info["set_aside"],
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return metrics, evaluated_on


def remeasure_card(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Replace the val and test figures in the card of the ``.keras`` model at ``path``; the new card.

    Figures measured elsewhere (``metrics.fgnet``) are kept; the figures replaced stay in the card under
    ``metrics_before_remeasure`` so that nothing is lost."""
    path = Path(path)
    model, card = load_model(path)
    metrics, evaluated_on = measured_metrics(model, card, path, folder)
    previous = {split: card["metrics"][split] for split in ("val", "test") if split in card.get("metrics", {})}
    card = {**card, "metrics": {**card.get("metrics", {}), **metrics}, "evaluated_on": evaluated_on,
            "metrics_before_remeasure": previous}
    write_json_atomic(card_path(path), card)
    return card
