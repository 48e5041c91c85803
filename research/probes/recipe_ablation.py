"""Training recipes side by side, from their model cards: what differs, and val/test figures per age band.

Every figure comes from a card written by ``agegender train`` (measured at the end of that run). With
``--baseline``, a third table gives each run's differences from that card and the parts of the goal it misses;
``--summary`` prints instead one short row per run: what its recipe changed from the baseline's, its training
minutes and its headline figures (the table in ``research/run_log.md``).

    python research/probes/recipe_ablation.py [--baseline models/agenet.json] research/cards/agenet_v1.json ...

The tables in ``research/run_log.md`` and ``research/results/recipes.md`` are generated: each sits between
``<!-- recipe_ablation.py ARGS -->`` and ``<!-- /recipe_ablation.py -->``, where ARGS are this script's arguments
(paths relative to the repository). After adding a run's card to ARGS, rewrite every such table with

    python research/probes/recipe_ablation.py --update research/run_log.md research/results/recipes.md

``tests/test_research_probes.py`` fails when a committed table differs from what its cards give.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

from agegender.config import TrainConfig
from agegender.evaluation.reference import band_maes, goal_misses

REPO = Path(__file__).resolve().parents[2]
# how a run was bounded, not what it learned from (a card records `stopped_by_budget` and any `schedule_end_epoch`)
IGNORED = {"name", "max_train_minutes", "limit", "budget_shortens_schedule"}
BLOCK = re.compile(r"(<!-- recipe_ablation\.py (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /recipe_ablation\.py -->)",
                   re.DOTALL)


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
    file = Path(path).with_suffix(".json")  # relative to the working directory, else to the repository
    return json.loads((file if file.exists() else REPO / file).read_text())


def _config(card: dict) -> dict | None:
    """The card's recipe, or None for an ensemble's card (its members each have one, but the mean has none)."""
    if "config" not in card and "members" in card:
        return None
    # cards written before a setting existed get its default, which is what their run used
    return TrainConfig.from_dict(card["config"]).to_dict()


def _changes(card: dict, base_config: dict) -> str:
    """What a run changed from the baseline's recipe; for an ensemble, what each member changed."""
    config = _config(card)
    if config is None:
        return "mean of " + " + ".join(f"{member['name']} ({recipe_changes(_config(member), base_config) or 'same recipe'})"
                                       for member in card["members"])
    changes = recipe_changes(config, base_config)
    if "face_descriptor" in card:  # `agegender add-descriptor`: a trained model itself, plus the descriptor
        base = card["base_model"]
        base_name = (base.get("trained_as") or base["name"]).split()[0]  # the run it was trained as, if recorded
        record = card["face_descriptor"]
        gender = "MLP heads on its inner features" if "gender_heads" in record else "its descriptor"
        mixed = (f"{base_name}'s model + dlib's face network: gender from {gender} (weight of {base_name}'s logit "
                 f"{record['agenet_logit_weight']})")
        if "age_head" in record:
            mixed += (f", age heads on its inner features (weight of {base_name}'s distribution "
                      f"{record['age_head']['agenet_dist_weight']})")
        return f"{mixed}; recipe {changes}" if changes else mixed
    return changes or "same recipe, retrained"


def recipe_changes(config: dict, baseline: dict) -> str:
    """The settings in which ``config`` differs from ``baseline``, as ``key=value`` (inside ``model_kwargs`` too)."""
    def flat(settings: dict) -> dict:
        out = {}
        for key, value in settings.items():
            if key not in IGNORED:
                out.update(value if isinstance(value, dict) else {key: value})
        return out

    def shown(value: object) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    mine, theirs = flat(config), flat(baseline)
    return ", ".join(f"{k}={shown(mine.get(k))}" for k in sorted(set(mine) | set(theirs))
                     if json.dumps(mine.get(k), sort_keys=True) != json.dumps(theirs.get(k), sort_keys=True))


def _headline(metrics: dict) -> str:
    if metrics.get("seen_in_training"):  # a train+val refit's val figures are in-sample, not comparable
        return "fitted on | fitted on | fitted on"
    return f"{metrics['age_mae']:.2f} | {100 * metrics['gender_accuracy']:.2f} | {band_maes(metrics)['60+']:.2f}"


def summary(paths: list[str], baseline: str) -> str:
    """One row per run: its changes from the baseline's recipe, minutes, and val/test age, gender and 60+ MAE."""
    reference = _load(baseline)
    base_config = _config(reference)
    lines = [f"| run | recipe changed from {reference['name']} | train min | val age MAE | val gender % | val 60+ MAE "
             "| test age MAE | test gender % | test 60+ MAE | test misses of the goal |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for card in map(_load, paths):
        changes = "(baseline)" if card["name"] == reference["name"] else _changes(card, base_config)
        test = card["metrics"]["test"]
        lines.append(f"| {card['name']} | {changes} | {_minutes(card['training']):.1f} "
                     f"| {_headline(card['metrics']['val'])} | {_headline(test)} "
                     f"| {', '.join(goal_misses(test)) or 'none'} |")
    return "\n".join(lines) + "\n"


def tables(paths: list[str], baseline: str | None = None) -> str:
    """The recipes' differing settings, their val/test figures, and (with a baseline) their differences from it.

    An ensemble's card has no recipe of its own, so it is left out of the first table (its members' recipes are
    in the summary) and shown in the other two."""
    cards = [_load(p) for p in paths]
    recipes = [(card, config) for card in cards if (config := _config(card)) is not None]
    configs = [config for _, config in recipes]
    keys = sorted({k for c in configs for k in c} - IGNORED)
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    lines = ["| recipe | " + " | ".join(differing) + " | read-out | epochs run | s/epoch | train min |",
             "|---" * (len(differing) + 5) + "|"]
    for card, config in recipes:
        readout = card.get("age_readout", {}).get("method", "expectation")
        cells = [json.dumps(config.get(k)) for k in differing]
        lines.append(f"| {card['name']} | " + " | ".join(cells) +
                     f" | {readout} | {card['training']['epochs_completed']} | {card['training']['seconds_per_epoch']:.0f}"
                     f" | {_minutes(card['training']):.1f} |")
    lines += ["", "| recipe | split | age MAE | gender % | MAE by band 0-12 / 13-19 / 20-39 / 40-59 / 60+ "
              "| gender % male / female |", "|---|---|---|---|---|---|"]
    for card in cards:
        for split in ("val", "test"):
            metrics = card["metrics"][split]
            label = f"{split} (fitted on)" if metrics.get("seen_in_training") else split  # a train+val refit
            lines.append(f"| {card['name']} | {label} | {_figures(metrics)} |")
    if baseline:
        reference = _load(baseline)
        lines += ["", f"| recipe | split | age MAE vs {reference['name']} | gender pts vs {reference['name']} "
                  f"| 60+ MAE vs {reference['name']} | misses of the goal |", "|---|---|---|---|---|---|"]
        for card in cards:
            lines += _against(card, reference)
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", nargs="*", help="model cards (.json) or their models (.keras)")
    parser.add_argument("--baseline", help="a card to compare every run with (e.g. the default's)")
    parser.add_argument("--summary", action="store_true", help="one short row per run (needs --baseline)")
    parser.add_argument("--update", nargs="+", metavar="MARKDOWN", help="regenerate the marked tables in these files")
    return parser


def render(arguments: argparse.Namespace) -> str:
    if not arguments.cards:
        raise SystemExit("recipe_ablation.py: give at least one model card")
    if arguments.summary:
        if not arguments.baseline:
            raise SystemExit("recipe_ablation.py: --summary needs --baseline")
        return summary(arguments.cards, arguments.baseline)
    return tables(arguments.cards, arguments.baseline)


def regenerated(text: str) -> str:
    """``text`` with every marked table replaced by what its arguments give now."""
    return BLOCK.sub(lambda m: m.group(1) + "\n" + render(_parser().parse_args(shlex.split(m.group("args")))) + "\n"
                     + m.group(4), text)


def update(markdown: Path) -> bool:
    """Rewrite the marked tables of one file; True if anything changed."""
    text = markdown.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"recipe_ablation.py: {markdown} has no <!-- recipe_ablation.py ... --> table")
    new = regenerated(text)
    markdown.write_text(new)
    return new != text


def main(paths: list[str], baseline: str | None = None) -> None:
    print(tables(paths, baseline), end="")


if __name__ == "__main__":
    args = _parser().parse_args()
    if args.update:
        for file in args.update:
            print(f"{file}: {'rewritten' if update(Path(file)) else 'already up to date'}")
    else:
        print(render(args), end="")
