"""Saving and loading models with their JSON model cards, atomically and with clear errors.

Keras and the model builders (whose custom layers a ``.keras`` file needs) are imported only when a Keras model is
loaded, so serving a TFLite export imports neither.

Serving checks every export against the SHA-256 its card records (and a ``.keras`` file against the one its export
was made from) before an interpreter opens it. So that this costs nothing on every load, a file's digest is kept
beside it (``.cache/<file>.sha256.json``) with the file's size, mtime, ctime, inode and device, and reused while
all five are unchanged (:func:`cached_sha256`). Any write to a file gives it a new ctime, which no tool can set back,
so a replaced, truncated, copied-over or edited file is hashed again and a mismatch is still refused; what the cache
cannot see is damage below the file system (a disk's bit rot). Promotion and export always hash in full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


class ModelFileError(RuntimeError):
    """A model file that is missing, damaged or lacks its model card."""


def card_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def deflate_archive(path: str | os.PathLike) -> None:
    """Rewrite the ``.keras`` (zip) archive at ``path`` with its members deflated, in place and atomically.

    Keras stores them uncompressed. Deflated, the default model's file is 27 % smaller (55.4 -> 40.5 MB) and takes
    about 0.2 s longer to load; Keras reads the archive as before, and the weights are the same bits.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w") as target:
            for member in source.infolist():
                packed = zipfile.ZipInfo(member.filename, member.date_time)
                packed.compress_type = zipfile.ZIP_DEFLATED
                with source.open(member) as reader, target.open(packed, "w", force_zip64=True) as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model_atomic(model: keras.Model, path: str | os.PathLike, card: dict | None = None, *,
                      deflate: bool = True) -> Path:
    """Write ``model`` (Keras format) and its card so that a crash never leaves a half-written file.

    ``deflate`` compresses the archive (:func:`deflate_archive`); training checkpoints, rewritten every epoch and
    deleted at the end, skip it to keep the epoch's time for training.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        if deflate:
            deflate_archive(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if card is not None:
        write_json_atomic(card_path(path), card)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Identifies a model file's exact bytes (an export records the one it was made from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


HASH_CACHE = ".cache"


def hash_record_path(path: str | os.PathLike) -> Path:
    """Where :func:`cached_sha256` keeps the digest of ``path``: ``.cache/<name>.sha256.json`` beside it."""
    path = Path(path)
    return path.parent / HASH_CACHE / f"{path.name}.sha256.json"


def _stat_key(stat: os.stat_result) -> dict[str, int]:
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino, "device": stat.st_dev}


def cached_sha256(path: str | os.PathLike) -> str:
    """:func:`file_sha256` of ``path``, reused from its record (:func:`hash_record_path`) while the file's size,
    mtime, ctime, inode and device are those recorded; else computed and recorded (silently not, in a folder that
    cannot be written)."""
    path = Path(path)
    stat = path.stat()
    key = _stat_key(stat)
    record = hash_record_path(path)
    try:
        saved = json.loads(record.read_text())
        if saved.get("stat") == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = file_sha256(path)
    if _stat_key(path.stat()) == key:  # not changed while it was read
        try:
            write_json_atomic(record, {"file": path.name, "stat": key, "sha256": digest})
        except OSError as exc:
            log.debug("cannot record the SHA-256 of %s: %s", path, exc)
    return digest


def read_card(model_path: str | os.PathLike) -> dict:
    path = card_path(model_path)
    if not path.is_file():
        raise ModelFileError(f"model card {path} is missing; it says how to preprocess inputs for {model_path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"model card {path} is damaged: {exc}") from None


def input_resize(card: dict) -> str:
    """The resize method a model was trained with (cards written before it was recorded used PIL's)."""
    from ..data.images import LEGACY_RESIZE

    return card.get("input", {}).get("resize", LEGACY_RESIZE)


def require_train_fit(card: dict, path: str | os.PathLike, chosen: str) -> None:
    """Refuse a model fitted on more than the train split: ``chosen`` (what a later step picks on val) would be
    picked on faces the model has already seen."""
    fit = card.get("data", {}).get("fit_splits", ["train"])
    if fit != ["train"]:
        raise ValueError(f"{path} was fitted on {fit}: its val figures are in-sample, so {chosen} could not be "
                         "chosen on val")


def require_same_data(card: dict, path: str | os.PathLike, data_info: dict,
                      why: str = "its val and test splits would not be the ones it never saw") -> None:
    """Refuse a model trained on other data than the folder just loaded (``data_info``: its ``fingerprint`` and
    ``folder``, as ``load_arrays`` gives them); ``why`` says what would go wrong."""
    trained_on = card.get("data", {}).get("fingerprint")
    if data_info["fingerprint"] != trained_on:
        raise ValueError(f"{path} was trained on other data (fingerprint {trained_on}) than {data_info['folder']} "
                         f"({data_info['fingerprint']}); {why}")


def load_model(path: str | os.PathLike, *, compile: bool = False) -> tuple[keras.Model, dict]:
    """Load a model and its card; raise :class:`ModelFileError` with the reason if either is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found. Train one with `agegender train` "
                             f"(see README) or pass --model PATH to an existing .keras file.")
    card = read_card(path)
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        # Keras would report such a file as "not found"; a .keras file is a zip archive, so this one is cut short
        # (an interrupted copy or download) or is something else under that name.
        raise ModelFileError(f"model file {path} is damaged or not a Keras model: not a complete .keras (zip) "
                             "archive; copy or train it again")
    try:
        import keras
    except ImportError:
        raise ModelFileError(f"{path} is a Keras model, and Keras is not installed (`pip install .` serves TFLite "
                             "exports): install the training extra, pip install '.[train]', or serve its export "
                             f"(--model {path.with_suffix('.tflite')}, written by `agegender export`)") from None

    from ..models import builders as _builders  # noqa: F401  (registers the custom layers for loading)
    from ..models import detail_cap as _detail_cap  # noqa: F401

    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as exc:  # zip, h5 and config errors all mean the same thing to the user
        raise ModelFileError(f"model file {path} is damaged or not a Keras model: {type(exc).__name__}: {exc}") from None
    return model, card


def export_damage(lite: str | os.PathLike, card: dict, *, cached: bool = True) -> str | None:
    """Why the TFLite file ``lite`` is not the export its card records, or None if it is (or nothing is recorded).

    Checked before an interpreter opens the file: TFLite trusts a flatbuffer's offsets, so a truncated or
    altered export can crash the whole process instead of raising an error. ``cached`` reuses a recorded digest
    (:func:`cached_sha256`); else the file is hashed in full.
    """
    lite = Path(lite)
    record = card.get("tflite")
    if not record or record.get("file") != lite.name:
        return None
    size = lite.stat().st_size
    if record.get("bytes") is not None and size != record["bytes"]:
        return f"it has {size:,} bytes where its card records {record['bytes']:,}"
    if record.get("sha256") and (cached_sha256 if cached else file_sha256)(lite) != record["sha256"]:
        return "its SHA-256 is not the one its card records"
    return None


def load_serving_model(path: str | os.PathLike, *, prefer_tflite: bool = True,
                       num_threads: int | None = None) -> tuple[Any, dict]:
    """The model to predict with, and its card.

    ``x.tflite`` loads that export. ``x.keras`` loads its TFLite export instead when
    ``prefer_tflite`` and the card records an export made from exactly this Keras file (same
    SHA-256); otherwise the Keras model. Both answer :func:`agegender.serving.inference.predict_arrays`.
    ``num_threads`` is the TFLite interpreter's (default: every CPU; a worker of a pool gives its share).
    """
    from .litert import TFLiteModel

    path = Path(path)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise ModelFileError(f"model file {path} not found. Create it with `agegender export --model "
                                 f"{path.with_suffix('.keras')}`.")
        card = read_card(path)
        damage = export_damage(path, card)
        if damage:
            raise ModelFileError(f"model file {path} is damaged: {damage}. Write it again with `agegender export "
                                 f"--model {path.with_suffix('.keras')}`.")
        try:
            return TFLiteModel(path, num_threads), card
        except ValueError as exc:
            raise ModelFileError(f"model file {path} is damaged: {exc}") from None
    if prefer_tflite and path.is_file():
        card = read_card(path)
        record = card.get("tflite")
        lite = path.with_name(record["file"]) if record else None
        if lite is not None and lite.is_file() and record.get("source_sha256") == cached_sha256(path):
            damage = export_damage(lite, card)
            if damage:
                log.warning("not serving %s (%s): the Keras model serves instead", lite, damage)
            else:
                try:
                    return TFLiteModel(lite, num_threads), card
                except ValueError as exc:
                    log.warning("not serving %s (%s): the Keras model serves instead", lite, exc)
    return load_model(path)


def list_models(folder: str | os.PathLike) -> list[tuple[Path, dict]]:
    """Models with readable cards in ``folder``, newest first."""
    found = []
    for path in sorted(Path(folder).glob("*.keras")):
        try:
            found.append((path, read_card(path)))
        except ModelFileError:
            continue
    return sorted(found, key=lambda item: item[1].get("created", ""), reverse=True)
