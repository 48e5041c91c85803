"""The README's results table: every model in models/ on the test split, then the reference tools;
then the standard errors of our models' figures.

    UTKFACE_DIR=/path/to/UTKFace python benchmarks/results_table.py [models/seed_cnn.keras models/agenet.keras ...]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd  # noqa: E402

from agegender.config import MODELS_DIR  # noqa: E402
from agegender.evaluation.metrics import compare_models  # noqa: E402
from agegender.evaluation.reference import GOAL, REFERENCE_TOOLS  # noqa: E402

COLUMNS = ["test age MAE", "test gender acc %", "MAE 0-12", "MAE 13-19", "MAE 20-39", "MAE 40-59", "MAE 60+",
           "acc female %", "acc male %", "input", "parameters", "epochs", "train minutes", "file MB"]
SE_COLUMNS = ["SE " + c for c in COLUMNS[:7]]


def markdown(table: pd.DataFrame, columns: list[str] = COLUMNS) -> str:
    cells = table.reindex(columns=columns).astype(object).where(table.reindex(columns=columns).notna(), "")
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in cells.iterrows():
        values = [f"{int(v):,}" if isinstance(v, (int, float)) and v > 9999 and float(v).is_integer() else str(v)
                  for v in row]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    paths = sys.argv[1:] or [str(p) for p in sorted(MODELS_DIR.glob("*.keras"))]
    ours = compare_models(paths)
    reference = pd.DataFrame(REFERENCE_TOOLS).T
    goal = pd.DataFrame([GOAL], index=["goal (issue #3)"])
    print(markdown(pd.concat([ours, reference, goal])))
    print("\nSampling standard errors of our figures on the test split (a gap of about one SE is within noise):\n")
    print(markdown(ours, SE_COLUMNS))


if __name__ == "__main__":
    main()
