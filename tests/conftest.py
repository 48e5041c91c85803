"""Shared fixtures: an isolated preprocessing cache, small image folders and one tiny trained model.

Nothing here writes into the repository: the cache, the folders, the model and
its run directory all live under pytest's temporary directory.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"

#: Files of the bad folder, by what is wrong with them (name -> category).
#: ``good`` files are usable crops; the others are skipped by ``load_utkface``
#: (``unparsable``, ``text``, ``empty``) or fail when decoded.
BAD_FILES = {
    "not_a_utkface_name.jpg": "unparsable",
    "30_0_1_20170101000000001.jpg.chip.jpg": "text",
    "31_1_2_20170101000000002.jpg.chip.jpg": "empty",
    "32_0_0_20170101000000003.jpg.chip.jpg": "truncated",
    "33_1_0_20170101000000004.jpg.chip.jpg": "corrupt",
    "34_0_1_20170101000000005.png": "alpha",
    "35_1_2_20170101000000006.jpg": "grayscale",
    "36_0_3_20170101000000007.png": "bomb",
    "37_1_4_20170101000000008.webp": "webp",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "behavioural: a property a trained model should have (loose tolerance)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("UTKFACE_DIR"):
        return
    skip = pytest.mark.skip(reason="needs the full UTKFace data set: set UTKFACE_DIR to its folder "
                                   "(CI: ../shared/datasets/UTKFace)")
    for item in items:
        if "full_data" in item.keywords:
            item.add_marker(skip)


# -- crafted files --------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose IHDR declares ``width`` x ``height`` 8-bit gray pixels (valid CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


def corrupt_jpeg(real: bytes) -> bytes:
    """A real JPEG's headers (through the start-of-scan segment) followed by garbage scan data.

    The garbage has no 0xFF bytes except one invalid marker (0xFF02), so the
    decoder reliably fails on it rather than decoding noise.
    """
    sos = real.find(b"\xff\xda")
    assert sos > 0, "not a baseline JPEG"
    body = sos + 2 + int.from_bytes(real[sos + 2:sos + 4], "big")
    rnd = random.Random(1234)
    garbage = bytes(rnd.randrange(0, 255) for _ in range(len(real) - body))
    return real[:body] + garbage[:300] + b"\xff\x02" + garbage[300:]


def garbage_after_jfif_header(real: bytes) -> bytes:
    """SOI + JFIF APP0 segment of a real JPEG, then seeded random bytes (markers unreadable)."""
    rnd = random.Random(1234)
    return real[:20] + bytes(rnd.getrandbits(8) for _ in range(len(real) - 20))


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLE.iterdir() if p.name.endswith(".jpg"))


def pick_sample(per_split: dict[str, int]) -> list[Path]:
    """The first ``per_split[s]`` sample files (sorted by name) of each split."""
    from agegender.data import split_of

    chosen: list[Path] = []
    counts = dict.fromkeys(per_split, 0)
    for name in sample_names():
        split = split_of(name)
        if counts[split] < per_split[split]:
            counts[split] += 1
            chosen.append(SAMPLE / name)
    assert counts == per_split, f"the sample has too few images: {counts}"
    return chosen


#: A gender calibration as ``agegender calibrate-gender`` writes it into a card: the one measured for the default model
#: of 2026-12-07 (agenet, served by its TFLite export) on the full UTKFace val split. The app tests serve the default
#: model with this section (:func:`calibrated_model_copy`), so they do not depend on the card of the model promoted.
GENDER_CONFIDENCE = {"method": "temperature", "a": 0.7843251492966543, "b": 0.0, "temperature": 1.274981429445113,
                     "threshold": 0.7987636819723732, "threshold_found": True, "target_accuracy": 0.95,
                     "fitted_on": "val"}


def calibrated_model_copy(model: Path, folder: Path, section: dict | None = None) -> Path:
    """``model`` (and its TFLite export, if any) linked into ``folder`` beside a copy of its card that has a
    ``gender_confidence`` section (default :data:`GENDER_CONFIDENCE`); the new model path."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    card = json.loads(model.with_suffix(".json").read_text())
    target = folder / model.name
    for source in (model, model.with_suffix(".tflite")):
        if source.is_file() and not (folder / source.name).exists():
            (folder / source.name).symlink_to(source.resolve())
    target.with_suffix(".json").write_text(json.dumps({**card, "gender_confidence": section or GENDER_CONFIDENCE}))
    return target


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point ``AGEGENDER_CACHE`` at a temporary folder so tests never touch data/cache."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGEGENDER_CACHE", str(folder))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        yield folder


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, isolated_cache) -> Path:
    """60 sample crops: 40 train, 10 val, 10 test (by the hash split)."""
    folder = tmp_path_factory.mktemp("tiny")
    for path in pick_sample({"train": 40, "val": 10, "test": 10}):
        shutil.copyfile(path, folder / path.name)
    return folder


@pytest.fixture
def small_folder(tmp_path) -> Path:
    """A fresh, writable copy of 24 sample crops (8 per split) for tests that modify folders."""
    folder = tmp_path / "small"
    folder.mkdir()
    for path in pick_sample({"train": 8, "val": 8, "test": 8}):
        shutil.copyfile(path, folder / path.name)
    return folder


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory) -> Path:
    """Good crops (two per split) plus one file for every way a file can be bad or unusual (BAD_FILES)."""
    folder = tmp_path_factory.mktemp("bad")
    good = pick_sample({"train": 2, "val": 2, "test": 2})
    for path in good:
        shutil.copyfile(path, folder / path.name)
    real = good[0].read_bytes()
    face = Image.open(good[0]).convert("RGB")
    for name, kind in BAD_FILES.items():
        target = folder / name
        if kind == "unparsable":
            target.write_bytes(real)
        elif kind == "text":
            target.write_text("This is not a picture, just text saved with a .jpg name.\n" * 5)
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "truncated":
            target.write_bytes(real[: len(real) // 2])
        elif kind == "corrupt":
            target.write_bytes(corrupt_jpeg(real))
        elif kind == "alpha":
            rgba = face.convert("RGBA")
            rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
            rgba.save(target, format="PNG")
        elif kind == "grayscale":
            face.convert("L").save(target, format="JPEG", quality=90)
        elif kind == "bomb":
            target.write_bytes(png_declaring(20000, 20000))
        elif kind == "webp":
            face.save(target, format="WEBP", quality=80)
        else:  # pragma: no cover
            raise AssertionError(kind)
    return folder


@pytest.fixture(scope="session")
def good_names(bad_folder) -> list[str]:
    return sorted(p.name for p in bad_folder.iterdir() if p.name not in BAD_FILES)


@dataclass
class TinyModel:
    path: Path
    card: dict
    config: object
    folder: Path


TINY_CONFIG = dict(model="seed_cnn", name="tiny", image_size=64, color_mode="grayscale",
                   epochs=1, batch_size=16, limit=32, seed=7)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_folder, isolated_cache) -> TinyModel:
    """seed_cnn trained for one epoch on ``tiny_folder`` (64 px grayscale), trained once per session."""
    from agegender.config import TrainConfig
    from agegender.training.loop import train

    root = tmp_path_factory.mktemp("tiny_model")
    config = TrainConfig(**TINY_CONFIG)
    card = train(config, tiny_folder, models_dir=root / "models", runs_dir=root / "runs", verbose=0)
    path = root / "models" / "tiny.keras"
    assert path.is_file()
    return TinyModel(path=path, card=card, config=config, folder=tiny_folder)


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()
