"""UTKFace file names -> labels, a stable split, and a report of what was skipped.

UTKFace names are ``[age]_[gender]_[race]_[datetime].jpg`` (or ``.jpg.chip.jpg``);
a few names lack the race field (``39_1_20170116174525125.jpg.chip.jpg``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import MAX_AGE, chosen_data_dir, resolve_data_dir
from .duplicates import set_aside_duplicates
from .images import IMAGE_EXTENSIONS, has_image_signature

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?:(?P<race>[0-4])_)?(?P<stamp>\d{8,})(?:\D.*)?$")


@dataclass(frozen=True)
class Labels:
    age: int
    gender: int
    race: int | None


class UnparsableName(ValueError):
    """The file name does not follow UTKFace's ``age_gender_race_datetime`` scheme."""


def parse_filename(name: str) -> Labels:
    """Labels encoded in a UTKFace file name; raises :class:`UnparsableName`."""
    base = os.path.basename(name)
    stem = base.split(".", 1)[0]
    match = _NAME.match(stem)
    if not match:
        raise UnparsableName(f"{base!r} is not age_gender[_race]_datetime")
    age = int(match["age"])
    if not 0 <= age <= MAX_AGE:
        raise UnparsableName(f"{base!r}: age {age} outside 0..{MAX_AGE}")
    race = match["race"]
    return Labels(age=age, gender=int(match["gender"]), race=None if race is None else int(race))


def _hash_position(name: str) -> float:
    """A stable, uniform number in [0, 1) from the file's base name alone."""
    digest = hashlib.sha1(os.path.basename(name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(name: str) -> str:
    """train/val/test (80/10/10) from a stable hash of the file's base name alone.

    A file's split never depends on which other files are present; :func:`load_utkface` then sets aside
    byte-identical copies (:mod:`agegender.data.duplicates`), which is the one thing other files decide.
    """
    u = _hash_position(name)
    if u < SPLIT_FRACTIONS["train"]:
        return "train"
    if u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"]:
        return "val"
    return "test"


def spread_subset(rows: pd.DataFrame, count: int) -> pd.DataFrame:
    """``count`` of ``rows``: the files whose name hash comes first, kept in their original order.

    The frame is sorted by file name, and UTKFace names begin with the age, so its first rows are all babies; the
    hash order mixes ages, genders and races, and a smaller subset lies inside a larger one (``limit`` of a
    training run).
    """
    if count < 0:
        raise ValueError(f"a subset needs a count of 0 or more, not {count}")
    order = np.argsort([_hash_position(name) for name in rows["filename"]], kind="stable")
    return rows.iloc[np.sort(order[:count])]


@dataclass
class SkipReport:
    """Files that were not used, by reason, with examples."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: str) -> None:
        self.reasons.setdefault(reason, []).append(path)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.reasons.values())

    def summary(self, examples: int = 3) -> str:
        if not self.reasons:
            return "no files skipped"
        parts = []
        for reason, paths in sorted(self.reasons.items()):
            shown = ", ".join(os.path.basename(p) for p in paths[:examples])
            parts.append(f"{len(paths)} {reason} (e.g. {shown})")
        return f"skipped {self.count} files: " + "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {reason: {"count": len(p), "examples": [os.path.basename(x) for x in p[:5]]}
                for reason, p in self.reasons.items()}


def load_utkface(folder: str | os.PathLike | None = None, *, report: SkipReport | None = None) -> pd.DataFrame:
    """Read a flat UTKFace folder into a DataFrame.

    Columns: ``path, filename, age, gender (0 male, 1 female), race (nullable Int64), split``. ``split`` is
    train, val, test, or ``"duplicate"`` for copies set aside (:mod:`agegender.data.duplicates`; the names by
    reason are in ``frame.attrs["set_aside"]``). Names that don't parse, non-image files and empty files are skipped and
    reported (logged, and collected in ``report`` when one is passed), never raised.
    Images whose content turns out corrupt are dropped later, when decoded. Without ``folder``, ``$UTKFACE_DIR``
    or ``data/UTKFace/`` this reads the bundled sample, and says so: its figures are for trying the workflow.
    """
    root = resolve_data_dir(folder)
    if chosen_data_dir(folder) is None:
        log.warning("reading the bundled sample %s (a few hundred crops, for trying the workflow; its metrics are "
                    "not results): set UTKFACE_DIR or put the dataset in data/UTKFace/", root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"UTKFace folder {root} does not exist. Download the Kaggle dataset "
            "'jangedoo/utkface-new' and point UTKFACE_DIR at its UTKFace/ folder.")
    report = report if report is not None else SkipReport()
    rows = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if not entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.name.lower().endswith((".md", ".txt", ".csv", ".json")):
            continue  # documentation beside the data (README, LICENSE), not an image
        try:
            labels = parse_filename(entry.name)
        except UnparsableName:
            report.add("unparsable names", str(path))
            continue
        if entry.stat().st_size == 0:
            report.add("empty files", str(path))
            continue
        if not has_image_signature(path):
            report.add("non-image files", str(path))
            continue
        rows.append((str(path), entry.name, labels.age, labels.gender, labels.race, split_of(entry.name)))
    if report.count:
        log.warning("%s: %s", root, report.summary())
    frame = pd.DataFrame(rows, columns=["path", "filename", "age", "gender", "race", "split"])
    frame["race"] = frame["race"].astype("Int64")
    frame["age"] = frame["age"].astype("int32")
    frame["gender"] = frame["gender"].astype("int8")
    if frame.empty:
        raise ValueError(f"no usable UTKFace images in {root} ({report.summary()})")
    frame, set_aside = set_aside_duplicates(frame)
    frame.attrs["set_aside"] = set_aside
    if any(set_aside.values()):
        log.info("%s: set aside %s", root, "; ".join(f"{len(names)} {reason}" for reason, names in set_aside.items()))
    return frame


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of the file names and labels, recorded with every result."""
    digest = hashlib.sha256()
    for name, age, gender in zip(frame["filename"], frame["age"], frame["gender"]):
        digest.update(f"{name}|{age}|{gender}\n".encode())
    return digest.hexdigest()[:16]


def split_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {s: int((frame["split"] == s).sum()) for s in SPLIT_FRACTIONS}
