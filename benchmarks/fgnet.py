"""Ages on FG-NET (1,002 scanned family photos, not UTKFace) through the whole-photo path, beside face-api.js.

    FGNET_DIR=../shared/datasets/fgnet .venv/bin/python benchmarks/fgnet.py [MODEL ...] [--update-card]

Each model (default: the shipped default) is run as `agegender evaluate --photos` runs it: detect, crop the
largest face, predict. Standard errors are bootstrapped over the 82 persons. ``--update-card`` stores the summary
(without per-photo rows) in each model's card as ``metrics.fgnet``, which the README and the model card quote.
FG-NET is for choosing between models; never train on it.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from agegender.config import default_model_path  # noqa: E402
from agegender.evaluation.photos import evaluate_photos  # noqa: E402
from agegender.evaluation.reference import FGNET_GOAL, FGNET_REFERENCE  # noqa: E402
from agegender.serving.modelio import read_card, write_json_atomic, card_path  # noqa: E402


def row(name: str, metrics: dict) -> str:
    decades = {d["group"]: d for d in metrics["by_decade"]}
    bias = " / ".join(f"{decades[g]['age_bias']:+.1f}" if g in decades else "" for g in ("0-9", "10-19", "20-29",
                                                                                           "30-39", "40-49"))
    se = f" ± {metrics['age_mae_se']:.2f}" if metrics.get("age_mae_se") is not None else ""
    return (f"| {name} | {metrics['photos']:,} | {metrics['n']:,} | {metrics['age_mae']:.2f}{se} | "
            f"{metrics['age_bias']:+.2f} | {bias} | "
            f"{100 * metrics['age_range_coverage']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--folder", default=os.environ.get("FGNET_DIR"), help="FG-NET folder (default: $FGNET_DIR)")
    parser.add_argument("--update-card", action="store_true", help="store the figures in each model's card")
    args = parser.parse_args()
    if not args.folder:
        parser.error("set FGNET_DIR or pass --folder (the FG-NET folder with labels.csv)")
    print("| model | photos | faces found | age MAE (SE) | mean bias | bias 0-9 / 10-19 / 20-29 / 30-39 / 40-49 | "
          "80 % range holds % |")
    print("|---|---|---|---|---|---|---|")
    for path in args.models or [str(default_model_path())]:
        metrics = evaluate_photos(args.folder, model_path=path)
        card = read_card(path)
        print(row(card.get("name", os.path.basename(path)), metrics), flush=True)
        if args.update_card:
            summary = {k: v for k, v in metrics.items() if k not in ("failures", "model", "folder", "labels")}
            card.setdefault("metrics", {})["fgnet"] = {**summary, "command": "benchmarks/fgnet.py --update-card"}
            write_json_atomic(card_path(path), card)
    for name, ref in FGNET_REFERENCE.items():
        print(f"| {name} | {ref['photos']:,} | {ref['faces found']:,} | {ref['age MAE']:.2f} | "
              f"{ref['mean bias']:+.2f} | | |")
    print(f"| goal (issue #47) | 1,002 | 1,002 | <= {FGNET_GOAL['age MAE']:.1f} | within ±{FGNET_GOAL['mean bias']:.1f} "
          "| | |")


if __name__ == "__main__":
    main()
