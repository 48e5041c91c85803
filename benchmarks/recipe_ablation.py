"""Training recipes side by side, from their model cards: what differs, and val/test figures per age band.

Every figure comes from a card written by ``agegender train`` (measured at the end of that run).

    python benchmarks/recipe_ablation.py benchmarks/results/cards/agenet_v1.json models/agenet.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agegender.config import TrainConfig

# how a run was bounded, not what it learned from (a card records `stopped_by_budget` and any `schedule_end_epoch`)
IGNORED = {"name", "max_train_minutes", "limit", "budget_shortens_schedule"}


def _figures(metrics: dict) -> str:
    bands = " / ".join(f"{row['age_mae']:.2f}" for row in metrics["by_age_band"])
    genders = " / ".join(f"{100 * row['gender_accuracy']:.1f}" for row in metrics["by_gender"])
    return (f"{metrics['age_mae']:.2f} | {100 * metrics['gender_accuracy']:.2f} | {bands} | {genders}")


def _minutes(training: dict) -> float:
    return training.get("wall_seconds_all_stages", training["wall_seconds"]) / 60


def main(paths: list[str]) -> None:
    cards = [json.loads(Path(p).with_suffix(".json").read_text()) for p in paths]
    # cards written before a setting existed get its default, which is what their run used
    configs = [TrainConfig.from_dict(card["config"]).to_dict() for card in cards]
    keys = sorted({k for c in configs for k in c} - IGNORED)
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    print("| recipe | " + " | ".join(differing) + " | read-out | epochs run | s/epoch | train min |")
    print("|---" * (len(differing) + 5) + "|")
    for card, config in zip(cards, configs):
        readout = card.get("age_readout", {}).get("method", "expectation")
        cells = [json.dumps(config.get(k)) for k in differing]
        print(f"| {card['name']} | " + " | ".join(cells) +
              f" | {readout} | {card['training']['epochs_completed']} | {card['training']['seconds_per_epoch']:.0f}"
              f" | {_minutes(card['training']):.1f} |")
    print()
    print("| recipe | split | age MAE | gender % | MAE by band 0-12 / 13-19 / 20-39 / 40-59 / 60+ | gender % male / female |")
    print("|---|---|---|---|---|---|")
    for card in cards:
        for split in ("val", "test"):
            metrics = card["metrics"][split]
            label = f"{split} (fitted on)" if metrics.get("seen_in_training") else split  # a train+val refit
            print(f"| {card['name']} | {label} | {_figures(metrics)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
