"""The detail-cap stage: a trained model behind :class:`~agegender.models.detail_cap.DetailCap`, re-measured.

``agegender cap-detail MODEL --side 80 --name NAME`` (or ``detail_cap`` in a recipe, after the descriptor step)
writes ``runs/NAME/NAME.keras`` with a card whose val and test figures are the capped model's own. Nothing is
fitted: the stage only changes what every input looks like, so it costs one pass over val and test.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from ..config import MODELS_DIR
from ..models.detail_cap import with_detail_cap
from ..serving.modelio import file_sha256, load_model, save_model_atomic
from .remeasure import measured_metrics


def cap_detail(model_path: str | os.PathLike, side: int, name: str, folder: str | os.PathLike | None = None, *,
               models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """The model at ``model_path`` with its inputs' detail capped at ``side`` px, written to
    ``models_dir/<name>.keras``; its card."""
    start = time.perf_counter()
    model_path = Path(model_path)
    model, card = load_model(model_path)
    if card.get("detail_cap"):
        raise ValueError(f"{model_path} already caps its inputs' detail at {card['detail_cap']['side']} px")
    output = Path(models_dir) / f"{name}.keras"
    if output.resolve() == model_path.resolve():
        raise ValueError(f"{output} is the model it starts from; write the capped model under another name")
    capped = with_detail_cap(model, side)
    metrics, evaluated_on = measured_metrics(capped, card, model_path, folder)
    seconds = time.perf_counter() - start
    training = card.get("training", {})
    new_card = {
        **{k: v for k, v in card.items() if k not in ("tflite", "metrics", "created")},
        "name": name,
        "config": {**card["config"], "detail_cap": int(side)},
        "architecture": f"{card['architecture']}+detail_cap",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "detail_cap": {"side": int(side), "size": int(card["input"]["image_size"]),
                       "what": "every input shrunk to side px (area) and enlarged back (bilinear), in the graph",
                       "base_model": {"file": model_path.name, "name": card.get("name"),
                                      "sha256": file_sha256(model_path),
                                      "metrics": {split: {k: card["metrics"][split][k] for k in ("age_mae", "gender_accuracy")}
                                                  for split in ("val", "test") if split in card.get("metrics", {})}},
                       "step_seconds": round(seconds, 1)},
        "evaluated_on": evaluated_on,
        "metrics": metrics,
    }
    if "wall_seconds_all_stages" in training:
        new_card["training"] = {**training, "wall_seconds_all_stages": round(training["wall_seconds_all_stages"] + seconds, 1)}
    save_model_atomic(capped, output, new_card)
    return new_card
