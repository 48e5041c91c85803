"""Promotion: the one way a trained model replaces a shipped one in ``models/``.

Training, notebooks and recipes write under ``runs/``; ``agegender promote`` checks what a run made (its card, its
metrics, its TFLite export made from exactly this Keras file) and only then copies the files into ``models/``, each
through a temporary file and an atomic rename, the card last so that a reader never pairs a new card with an old
model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..config import MODELS_DIR
from .modelio import ModelFileError, card_path, export_damage, file_sha256, read_card, write_json_atomic

REQUIRED_METRICS = ("age_mae", "gender_accuracy")


def find_model(source: str | os.PathLike) -> Path:
    """The ``.keras`` file a run made: ``source`` itself, or the one model with a card in the run folder
    (``RUN/NAME.keras`` where ``RUN`` is named ``NAME`` wins when there are several)."""
    source = Path(source)
    if source.is_file():
        if source.suffix != ".keras":
            raise ModelFileError(f"{source}: promote a Keras model (.keras) or a run folder; its export goes with it")
        return source
    if not source.is_dir():
        raise ModelFileError(f"{source}: no such model file or run folder")
    named = source / f"{source.name}.keras"
    if named.is_file() and card_path(named).is_file():
        return named
    candidates = [p for p in sorted(source.glob("*.keras")) if card_path(p).is_file()]
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ModelFileError(f"{source}: expected one model with a card in the run folder, found {found}; "
                             "name the .keras file")
    return candidates[0]


def check_promotable(model_path: Path, require_export: bool = True) -> dict[str, Any]:
    """The card of ``model_path`` if it may be promoted, else :class:`ModelFileError` saying what is missing."""
    card = read_card(model_path)
    for split in ("val", "test"):
        metrics = card.get("metrics", {}).get(split, {})
        missing = [key for key in REQUIRED_METRICS if key not in metrics]
        if missing:
            raise ModelFileError(f"{model_path}: its card has no {split} {', '.join(missing)}; "
                                 "promote a model that training or `agegender add-descriptor` finished")
    record = card.get("tflite")
    if require_export:
        if not record:
            raise ModelFileError(f"{model_path}: no TFLite export recorded in its card; run `agegender export "
                                 f"--model {model_path}` first (serving uses the export)")
        lite = model_path.with_name(record["file"])
        if not lite.is_file():
            raise ModelFileError(f"{model_path}: its export {lite} is missing; run `agegender export --model {model_path}`")
        if record.get("source_sha256") != file_sha256(model_path):
            raise ModelFileError(f"{model_path}: its export {lite.name} was made from another version of the model; "
                                 f"run `agegender export --model {model_path}` again")
        damage = export_damage(lite, card, cached=False)
        if damage:
            raise ModelFileError(f"{model_path}: its export {lite.name} is damaged: {damage}")
    return card


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def promote(source: str | os.PathLike, models_dir: str | os.PathLike = MODELS_DIR, *,
            require_export: bool = True, name: str | None = None) -> dict[str, Any]:
    """Copy a checked model (and its export and card) into ``models_dir`` under its own name, or as ``name`` (a
    candidate trained as ``agenet_x`` shipped as ``agenet``: the files are renamed, the card says what it was
    trained as).

    Returns ``{"model", "replaced", "before", "after"}``: the new path, whether a model of that name was replaced,
    and the val/test figures of the model replaced (None if new) and of the one promoted.
    """
    model_path = find_model(source)
    card = check_promotable(model_path, require_export)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    stem = name or model_path.stem
    if not stem or "/" in stem or stem.startswith("."):
        raise ModelFileError(f"{stem!r} is not a model name")
    target = models_dir / f"{stem}.keras"
    if target.resolve() == model_path.resolve():
        raise ModelFileError(f"{model_path} is already in {models_dir}")
    before = None
    if target.is_file() and card_path(target).is_file():
        try:
            before = _figures(read_card(target))
        except ModelFileError:
            before = None
    replaced = target.is_file()
    copies = [(model_path, target)]
    if card.get("tflite") and model_path.with_name(card["tflite"]["file"]).is_file():
        copies.append((model_path.with_name(card["tflite"]["file"]), models_dir / f"{stem}.tflite"))
        card["tflite"] = {**card["tflite"], "file": f"{stem}.tflite"}
    elif (models_dir / f"{stem}.tflite").is_file():
        # an old export of the model being replaced would no longer match it
        (models_dir / f"{stem}.tflite").unlink()
    if stem != model_path.stem:
        card = {**card, "name": stem, "trained_as": card.get("trained_as", card.get("name", model_path.stem))}
    for source_file, target_file in copies:
        _copy_atomic(source_file, target_file)
    write_json_atomic(card_path(target), card)  # the card last
    return {"model": str(target), "replaced": replaced, "before": before, "after": _figures(card)}


def _figures(card: dict) -> dict[str, Any]:
    metrics = card.get("metrics", {})
    return {split: {key: metrics.get(split, {}).get(key) for key in REQUIRED_METRICS} for split in ("val", "test")}
