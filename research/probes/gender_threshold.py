"""Where the gender errors are, and whether a decision threshold chosen on val would help.

Prints the best P(female) threshold on the validation split, test accuracy at 0.5 and at that
threshold, and test accuracy for children (0-12) vs everyone else. Children carry most errors, so it
also tries a threshold of their own, applied where the *predicted* age is 0-12 (all a deployed model
knows) and chosen on val: if the errors were a bias towards one gender, that would mend them.

    UTKFACE_DIR=/path/to/UTKFace python research/probes/gender_threshold.py [--model models/agenet.keras]
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

from agegender.config import AGE_BANDS, default_model_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    predicted = predict_splits(args.model)
    preds = {split: (p["p_female"], p["gender"], p["age"]) for split, p in predicted.items()}
    child_label, _, child_max = AGE_BANDS[0]
    looks_child = {split: p["pred_age"] < child_max + 1 for split, p in predicted.items()}

    def accuracy(split: str, threshold: float | np.ndarray, mask: np.ndarray | None = None) -> float:
        """Accuracy at ``threshold``: one for all faces, or one per face."""
        p, y, _ = preds[split]
        correct = (p >= threshold) == y
        return float(correct[mask].mean() if mask is not None else correct.mean())

    def child_threshold(split: str, threshold: float) -> np.ndarray:
        """``threshold`` for the faces read as children, 0.5 for the others."""
        return np.where(looks_child[split], threshold, 0.5)

    thresholds = np.linspace(0.3, 0.7, 81)
    best = float(thresholds[int(np.argmax([accuracy("val", t) for t in thresholds]))])
    best_child = float(thresholds[int(np.argmax([accuracy("val", child_threshold("val", t)) for t in thresholds]))])
    children = preds["test"][2] <= child_max
    print(f"model {args.model}")
    print(f"val:  accuracy {100 * accuracy('val', 0.5):.2f} % at 0.5, best threshold {best:.3f} "
          f"({100 * accuracy('val', best):.2f} %)")
    print(f"test: accuracy {100 * accuracy('test', 0.5):.2f} % at 0.5, {100 * accuracy('test', best):.2f} % "
          f"at the val threshold")
    print(f"test at 0.5: children {child_label} {100 * accuracy('test', 0.5, children):.1f} % (n={int(children.sum())}), "
          f"{child_max + 1}+ {100 * accuracy('test', 0.5, ~children):.1f} % (n={int((~children).sum())})")
    print(f"own threshold where the predicted age is {child_label}: {best_child:.3f} on val "
          f"({100 * accuracy('val', child_threshold('val', best_child)):.2f} %), test "
          f"{100 * accuracy('test', child_threshold('test', best_child)):.2f} %")


if __name__ == "__main__":
    main()
