"""List the training faces whose gender label a model trained on them still confidently contradicts.

A model fits most training labels, right or wrong, so a training face it contradicts with P(the other gender)
above the threshold is a likely label error (``research/results/gender_disagreements.md``: on val, most faces
two models contradicted above 0.9 plainly showed the other gender). The list is what the training setting
``exclude_faces`` reads (``agegender.data.cleaning``); only training faces are listed, val and test are never cleaned.
It prints how many faces it lists, by age group, so the list can be judged before any run uses it.

    UTKFACE_DIR=/path/to/UTKFace python research/probes/flag_label_errors.py [--model models/agenet.keras] \
        [--threshold 0.8] [--out data/label_flags/agenet_gender_0.8.txt]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits (shared with benchmarks/)

import numpy as np  # noqa: E402
from _splits import predict_splits  # noqa: E402

from agegender.config import PROJECT_ROOT, default_model_path  # noqa: E402
from agegender.data.cleaning import contradicted_faces, write_face_list  # noqa: E402
from agegender.serving.modelio import file_sha256  # noqa: E402

AGE_GROUPS = ((0, 3), (4, 12), (13, 19), (20, 39), (40, 59), (60, 200))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--threshold", type=float, default=0.8, help="P(the other gender) above which a face is listed")
    parser.add_argument("--out", default="data/label_flags/agenet_gender_0.8.txt")
    args = parser.parse_args()
    model = Path(args.model).resolve()
    shown = model.relative_to(PROJECT_ROOT) if model.is_relative_to(PROJECT_ROOT) else model  # the list is committed
    train = predict_splits(args.model, splits=("train",))["train"]
    names = contradicted_faces(train["filename"], train["gender"], train["p_female"], args.threshold)
    right = float(((train["p_female"] >= 0.5) == train["gender"]).mean())
    listed = np.isin(train["filename"], names)
    groups = "; ".join(f"{lo}-{hi if hi < 200 else ''}: {int((listed & (train['age'] >= lo) & (train['age'] <= hi)).sum())}"
                       for lo, hi in AGE_GROUPS)
    header = [f"training faces whose gender label {shown} contradicts with P(other gender) > {args.threshold}",
              f"model sha256 {file_sha256(args.model)}",
              f"command: python research/probes/flag_label_errors.py --model {shown} --threshold {args.threshold}",
              f"{len(names)} of {len(listed)} training faces (the model is right on {right:.2%} of them); by age {groups}"]
    path = write_face_list(args.out, names, header)
    print("\n".join(header))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
