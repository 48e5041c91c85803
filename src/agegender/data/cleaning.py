"""Label cleaning: lists of training faces to leave out, because a model trained on them contradicts their label.

UTKFace's gender labels are wrong for about 1 % of the faces, often in series labelled seconds apart
(``research/results/gender_disagreements.md``). A model trained on the training split fits most labels,
right or wrong; the training faces it still confidently contradicts are the likeliest label errors. A list of
them (``agegender flag-labels`` writes one) can be left out of a later run with the training setting
``exclude_faces``. Only the training split is ever cleaned: val and test keep every face, so figures stay
comparable with every other run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..config import project_path
from ..serving.modelio import write_text_atomic


class FaceListError(ValueError):
    """A list of faces to leave out is missing, empty, or names faces it must not."""


def read_face_list(path: str | os.PathLike) -> tuple[set[str], str]:
    """The file names listed in ``path`` (one per line; ``#`` starts a comment) and the file's SHA-1."""
    path = project_path(path)
    if not path.is_file():
        raise FaceListError(f"list of faces to leave out {path} not found; write it with "
                            "agegender flag-labels")
    text = path.read_text(encoding="utf-8")
    names = {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}
    if not names:
        raise FaceListError(f"list of faces to leave out {path} names no face")
    return names, hashlib.sha1(text.encode("utf-8")).hexdigest()


def p_other_gender(p_female: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each face, the probability a model gives to the gender its 0/1 label (1 = female) does not say."""
    p_female = np.asarray(p_female)
    return np.where(np.asarray(labels) == 1, 1.0 - p_female, p_female)


def contradicted_faces(filenames: np.ndarray, genders: np.ndarray, p_female: np.ndarray,
                       threshold: float) -> np.ndarray:
    """The file names whose label the model contradicts with probability above ``threshold`` (sorted)."""
    if not 0.5 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0.5, 1), got {threshold}")
    p_other = p_other_gender(p_female, genders)
    return np.sort(np.asarray(filenames)[p_other > threshold])


def write_face_list(path: str | os.PathLike, names: np.ndarray, header: list[str]) -> Path:
    """Write ``names`` one per line under ``#`` comment lines ``header`` (atomically)."""
    path = project_path(path)
    lines = [f"# {line}" for line in header] + [str(name) for name in names]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
