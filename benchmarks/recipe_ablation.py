"""Training recipes side by side, from their model cards: what differs, and val/test figures per age band.

Every figure comes from a card written by ``agegender train`` (measured at the end of that run). With
``--baseline``, a third table gives each run's differences from that card and the parts of the goal it misses.

    python benchmarks/recipe_ablation.py [--baseline models/agenet.json] benchmarks/results/cards/agenet_v1.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agegender.config import TrainConfig
from agegender.reference import band_maes, goal_misses

# how a run was bounded, not what it learned from (a card records `stopped_by_budget` and any `schedule_end_epoch`)
IGNORED = {"name", "max_train_minutes", "limit", "budget_shortens_schedule"}


def _figures(metrics: dict) -> str:
    bands = " / ".join(f"{row['age_mae']:.2f}" for row in metrics["by_age_band"])
    genders = " / ".join(f"{100 * row['gender_accuracy']:.1f}" for row in metrics["by_gender"])
    return (f"{metrics['age_mae']:.2f} | {100 * metrics['gender_accuracy']:.2f} | {bands} | {genders}")


def _minutes(training: dict) -> float:
    return training.get("wall_seconds_all_stages", training["wall_seconds"]) / 60


def _against(card: dict, baseline: dict) -> list[str]:
    """One row per split: differences from the baseline's figures (negative age = better, positive gender =
    better), and what the run still misses of the goal."""
    rows = []
    for split in ("val", "test"):
        mine, theirs = card["metrics"][split], baseline["metrics"][split]
        if mine.get("seen_in_training") or theirs.get("seen_in_training"):
            continue  # a refit's val is not a held-out comparison
        cells = (f"{mine['age_mae'] - theirs['age_mae']:+.2f}",
                 f"{100 * (mine['gender_accuracy'] - theirs['gender_accuracy']):+.2f}",
                 f"{band_maes(mine)['60+'] - band_maes(theirs)['60+']:+.2f}",
                 ", ".join(goal_misses(mine)) or "none")
        rows.append(f"| {card['name']} | {split} | " + " | ".join(cells) + " |")
    return rows


def _load(path: str) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


def main(paths: list[str], baseline: str | None = None) -> None:
    cards = [_load(p) for p in paths]
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
    if baseline:
        reference = _load(baseline)
        print()
        print(f"| recipe | split | age MAE vs {reference['name']} | gender pts vs {reference['name']} "
              f"| 60+ MAE vs {reference['name']} | misses of the goal |")
        print("|---|---|---|---|---|---|")
        for card in cards:
            print("\n".join(_against(card, reference)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", nargs="+", help="model cards (.json) or their models (.keras)")
    parser.add_argument("--baseline", help="a card to compare every run with (e.g. the default's)")
    arguments = parser.parse_args()
    main(arguments.cards, arguments.baseline)
