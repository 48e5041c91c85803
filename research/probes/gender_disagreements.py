"""The faces whose gender label the models confidently contradict: how many, and a contact sheet to inspect them.

A gender accuracy is capped by the labels' own errors: a face labelled with the wrong gender counts as a model
error however right the model is. This lists, on one split (val by default, never used to choose anything by
looking at test), the faces where the mean P(female) of one or more models is on the other side of 0.5 from the
label, counts them by how confident the models are, and draws the most confident ones with their file names, so
that a person can judge which are label errors (the file names let anyone check the judgement).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/gender_disagreements.py \
        [--model models/agenet.keras ...] [--split val] [--sheet /tmp/gender_disagreements.png] [--show 40]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits (shared with benchmarks/)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _splits import predict_splits  # noqa: E402
from PIL import Image  # noqa: E402

from agegender.config import default_model_path, resolve_data_dir  # noqa: E402
from agegender.data.cleaning import p_other_gender  # noqa: E402

#: P(the other gender) above which a disagreement is counted; gender label smoothing 0.1 keeps a model's
#: P(female) within about 0.05-0.95, so a level above 0.9 would count almost nothing
CONFIDENCE_LEVELS = (0.5, 0.7, 0.8, 0.9)
#: finer than the report bands at the young end, where the gender errors are
OLDEST = 200  # the last group has no upper end
AGE_GROUPS = ((0, 1), (2, 3), (4, 6), (7, 12), (13, 19), (20, 39), (40, 59), (60, OLDEST))


def disagreements(p_female: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices where ``p_female`` contradicts the 0/1 labels (1 = female), most confident first, and for
    every face the probability the models give to the gender its label does not say.

    A face is read as female from P(female) 0.5 up, as the evaluation reads it."""
    p_other = p_other_gender(p_female, labels)
    order = np.argsort(-p_other, kind="stable")
    contradicted = (p_female >= 0.5) != (labels == 1)
    return order[contradicted[order]], p_other


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", help="a model (repeat to average several); default: the default")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--sheet", default="/tmp/gender_disagreements.png", help="where to draw the contact sheet")
    parser.add_argument("--show", type=int, default=40, help="how many of the most confident to draw")
    args = parser.parse_args()
    models = args.model or [str(default_model_path())]
    runs = [predict_splits(path, (args.split,))[args.split] for path in models]
    if any(not np.array_equal(run["filename"], runs[0]["filename"]) for run in runs):
        raise ValueError("the models read the split's faces in different orders")
    first = runs[0]
    p_female = np.mean([run["p_female"] for run in runs], axis=0)
    labels, ages = first["gender"], first["age"]
    wrong, p_other = disagreements(p_female, labels)
    n = len(labels)
    print(f"{args.split}: {n} faces, mean P(female) of {len(models)} model(s): {', '.join(models)}")
    children = ages <= 12
    n_wrong_children = int(children[wrong].sum())
    print(f"accuracy {100 * (1 - len(wrong) / n):.2f} %: {n_wrong_children} of {int(children.sum())} faces aged 0-12 "
          f"and {len(wrong) - n_wrong_children} of {int((~children).sum())} aged 13+ contradicted")
    print("accuracy by age (years):", "; ".join(
        f"{f'{lo}-{hi}' if hi < OLDEST else f'{lo}+'} {100 * (1 - np.isin(np.flatnonzero(band), wrong).mean()):.1f} % "
        f"(n={int(band.sum())})"
        for lo, hi in AGE_GROUPS if (band := (ages >= lo) & (ages <= hi)).any()))
    print("disagreements with the label by P(the other gender):")
    for level in CONFIDENCE_LEVELS:
        count = int((p_other > level).sum())
        young = int(((p_other > level) & children).sum())
        print(f"  > {level:.2f}: {count:4d} faces ({100 * count / n:.2f} % of the split; {young} aged 0-12)")
    shown = wrong[:args.show]
    print(f"\nthe {len(shown)} most confident (file, label, P(other)):")
    for i in shown:
        print(f"  {first['filename'][i]}  label {'female' if labels[i] else 'male'}  P(other) {p_other[i]:.3f}")
    if not len(shown):
        return
    folder = resolve_data_dir()
    cols = 8
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (k, i) in zip(axes.flat, enumerate(shown)):
        ax.imshow(Image.open(folder / first["filename"][i]).convert("RGB"))
        ax.set_title(f"{k + 1}. {'F' if labels[i] else 'M'} {int(ages[i])}y  {p_other[i]:.2f}", fontsize=8)
    fig.suptitle(f"{args.split}: label gender (F/M), age, and the models' P(the other gender)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.sheet, dpi=80)
    print(f"\ncontact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
