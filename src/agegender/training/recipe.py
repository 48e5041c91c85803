"""A whole recipe, every stage its config names, into one run folder: train, add the face descriptor, cap the
inputs' detail, export.

``agegender train --config configs/agenet.json`` runs the shipped model's recipe this way into ``runs/agenet/``:
AgeNet under ``runs/agenet/base/``, AgeNet + dlib's face network under ``runs/agenet/descriptor/``, and the served
model (that, behind the detail cap) and its TFLite export in ``runs/agenet/``. Every stage resumes or redoes itself when the command is run again after an interruption.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import RUNS_DIR, TrainConfig

EXPORT_CHOICES = ("float16", "none")


def run_recipe(config: TrainConfig, folder: str | os.PathLike | None = None, *, out_dir: Path | None = None,
               runs_dir: Path = RUNS_DIR, fresh: bool = False, verbose: int = 2) -> dict[str, Any]:
    """Train ``config`` and the stages after it into ``out_dir`` (default ``runs/<name>/``); the final card."""
    from .distribution import writes_outputs
    from .loop import train

    if config.export is not None and config.export not in EXPORT_CHOICES:
        raise ValueError(f"export must be one of {list(EXPORT_CHOICES)} or null, not {config.export!r}")
    out_dir = Path(out_dir) if out_dir else Path(runs_dir) / config.output_name
    stages = ["base"] + ["descriptor"] * config.add_descriptor + ["detail_cap"] * bool(config.detail_cap)
    # each stage writes its model into a folder of its own, the last one into the run folder itself
    dirs = {stage: out_dir / stage for stage in stages[:-1]} | {stages[-1]: out_dir}
    card = train(config, folder, models_dir=dirs["base"], runs_dir=runs_dir, fresh=fresh, verbose=verbose)
    if not writes_outputs(config):
        return card  # a multi-worker run's other workers: the chief alone does the stages after training
    model_path = dirs["base"] / f"{config.output_name}.keras"
    if config.add_descriptor:
        from ..models.add_descriptor import add_descriptor

        card = add_descriptor(model_path, config.output_name, folder, models_dir=dirs["descriptor"],
                              augment=config.descriptor_augment)
        model_path = dirs["descriptor"] / f"{config.output_name}.keras"
    if config.detail_cap:
        from .cap_detail import cap_detail

        card = cap_detail(model_path, config.detail_cap, config.output_name, folder, models_dir=out_dir)
        model_path = out_dir / f"{config.output_name}.keras"
    if config.export:
        from ..serving.export import export_with_test_images
        from ..serving.modelio import read_card

        export_with_test_images(model_path, folder, quantization=config.export)
        card = read_card(model_path)
    return card
