"""Byte-identical copies in a UTKFace folder, set aside so that val and test are faces no model trained on.

UTKFace holds the same JPEG under several names (316 groups among the 21,338 shared crops), sometimes with
different labels. A file's split comes from its name (:func:`agegender.data.utkface.split_of`), so copies can land
in different splits. Two rules, applied after the split and touching nothing else:

- a val or test file byte-identical to a training file is left out of evaluation (52 val and 50 test files here);
- training files whose copies disagree on age or gender are left out of training (the label is unknown).

Left-out rows stay in the frame with ``split`` set to :data:`LEFT_OUT`, so the dataset's fingerprint (names and
labels) and every other file's split are unchanged.
"""

from __future__ import annotations

import hashlib
import os

import pandas as pd

LEFT_OUT = "duplicate"
COPY_OF_TRAIN = "val/test copies of a training file"
CONFLICTING = "training copies whose labels disagree"


def content_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def set_aside_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``frame`` (columns ``path, filename, age, gender, split``) with the two rules applied, and the file names
    set aside by reason (:data:`COPY_OF_TRAIN`, :data:`CONFLICTING`)."""
    # only files that share their size with another can be copies: hash those alone (a few hundred, not all)
    sizes = frame["path"].map(os.path.getsize)
    maybe = frame[sizes.map(sizes.value_counts()) > 1]
    hashes = maybe["path"].map(content_sha256)
    group_size = hashes.map(hashes.value_counts())
    copies = maybe[group_size > 1].assign(sha256=hashes[group_size > 1])
    in_train = set(copies.loc[copies["split"] == "train", "sha256"])
    labels_per_group = copies.groupby("sha256")[["age", "gender"]].nunique().max(axis=1)
    conflicting = set(labels_per_group[labels_per_group > 1].index)
    copy_of_train = copies["split"].isin(["val", "test"]) & copies["sha256"].isin(in_train)
    conflicting_train = (copies["split"] == "train") & copies["sha256"].isin(conflicting)
    out = frame.copy()
    out.loc[copy_of_train[copy_of_train].index, "split"] = LEFT_OUT
    out.loc[conflicting_train[conflicting_train].index, "split"] = LEFT_OUT
    return out, {COPY_OF_TRAIN: copies.loc[copy_of_train, "filename"].tolist(),
                 CONFLICTING: copies.loc[conflicting_train, "filename"].tolist()}
