"""``agegender flag-labels``: list the training faces whose gender label a model trained on them still contradicts.

A model fits most training labels, right or wrong, so a training face it contradicts with P(the other gender) above
the threshold is a likely label error (on val, most faces two models contradicted above 0.9 plainly showed the other
gender). The list is what the training setting ``exclude_faces`` reads (:mod:`agegender.data.cleaning`); only
training faces are listed, val and test are never cleaned. The header of the list records the model, its SHA-256,
the command and how many faces it lists by age group, so that the list can be judged before a run uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PROJECT_ROOT, default_model_path
from ..data.cleaning import contradicted_faces, write_face_list

#: Age groups the summary counts listed faces in (inclusive; the last open-ended).
AGE_GROUPS = ((0, 3), (4, 12), (13, 19), (20, 39), (40, 59), (60, 200))


@dataclass
class FlaggedFaces:
    path: Path  # the list written
    names: np.ndarray  # the file names listed
    header: list[str]  # the list's comment lines


def flag_label_errors(out: str | os.PathLike, *, model_path: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None, threshold: float = 0.8,
                      progress: bool = False) -> FlaggedFaces:
    """Predict the training split with ``model_path`` (served as its card says) and write the faces whose label it
    contradicts with P(other gender) > ``threshold`` to ``out``."""
    from ..config import resolve_data_dir
    from ..data import load_utkface
    from ..data.utkface import dataset_fingerprint
    from ..serving.inference import predict_frame
    from ..serving.modelio import file_sha256, load_serving_model, require_same_data

    model_path = Path(model_path or default_model_path()).resolve()
    if not 0.5 <= threshold < 1.0:  # before the model is loaded and the split predicted
        raise ValueError(f"--threshold must be in [0.5, 1), got {threshold}")
    model, card = load_serving_model(model_path)
    frame = load_utkface(data_dir)
    require_same_data(card, model_path, {"fingerprint": dataset_fingerprint(frame), "folder": resolve_data_dir(data_dir)},
                      why="flag a folder's training faces with a model trained on them (agegender train)")
    train = frame[frame["split"] == "train"]
    if train.empty:
        raise ValueError("the UTKFace folder has no training faces to flag")
    rows, preds, _ = predict_frame(model, card, train, progress=progress)
    p_female = preds["p_female"]
    genders, ages = rows["gender"].to_numpy(), rows["age"].to_numpy()
    names = contradicted_faces(rows["filename"].to_numpy(), genders, p_female, threshold)
    listed = np.isin(rows["filename"].to_numpy(), names)
    right = float(((p_female >= 0.5) == genders).mean())
    groups = "; ".join(f"{lo}-{hi if hi < 200 else ''}: {int((listed & (ages >= lo) & (ages <= hi)).sum())}"
                       for lo, hi in AGE_GROUPS)
    shown = model_path.relative_to(PROJECT_ROOT) if model_path.is_relative_to(PROJECT_ROOT) else model_path
    header = [f"training faces whose gender label {shown} contradicts with P(other gender) > {threshold}",
              f"model sha256 {file_sha256(model_path)}",
              f"command: agegender flag-labels --model {shown} --threshold {threshold}",
              f"{len(names)} of {len(listed)} training faces (the model is right on {right:.2%} of them); "
              f"by age {groups}"]
    return FlaggedFaces(write_face_list(out, names, header), names, header)
