"""Several trained AgeNets averaged into one network (research: the package and its CLI no longer offer it).

Run from the repository root (``agegender`` installed, or ``PYTHONPATH=src``)::

    python research/ensemble.py combine runs/a/a.keras runs/b/b.keras --name pair
    python research/ensemble.py train --config research/configs/agenet_pair.json

``combine`` and ``train`` (an ensemble recipe) were ``agegender combine`` and ``agegender train --config`` with an
ensemble recipe before the package was split into product and lab.

Models with different backbones err on different faces more than two runs of one recipe do
(``research/results/recipes.md``), so the mean of their P(female) and of their age distributions
is better than either. The combined network is one Keras model with the outputs of a single AgeNet
(``gender_out``, ``age_dist``, ``age_out``), so evaluation, export and serving treat it like any model;
its age read-out is chosen on val like a trained model's, and its card adds up what the members'
training cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from agegender.cli import _key_values, _output_dir
from agegender.config import MODELS_DIR, RUNS_DIR, TrainConfig
from agegender.models import ExpectedAge
from agegender.serving.inference import tta_settings
from agegender.serving.modelio import (ModelFileError, file_sha256, load_model, require_same_data, require_train_fit,
                                      save_model_atomic)
from agegender.training.loop import choose_age_readout, load_arrays, split_metrics, train

# What the members must share to be averaged: the same input, served the same way, on the same split.
_SHARED_INPUT = ("image_size", "color_mode", "resize")


def build_ensemble(members: Sequence[keras.Model], name: str = "agenet_ensemble") -> keras.Model:
    """One network that averages the members' P(female) and age distributions (their expectation is ``age_out``).

    Each member keeps its own weights inside as a sub-model (``member_1``, ``member_2``, ...).
    """
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two models")
    shapes = {tuple(member.input_shape[1:]) for member in members}
    if len(shapes) != 1:
        raise ValueError(f"the models take different inputs {sorted(shapes)}; they cannot share one")
    inputs = keras.Input(shape=shapes.pop(), name="image")
    genders, dists = [], []
    for index, member in enumerate(members, start=1):
        if "age_dist" not in member.output_names:
            raise ValueError(f"model {member.name!r} has no age distribution to average")
        own = keras.Model(member.input, {"gender_out": member.get_layer("gender_out").output,
                                         "age_dist": member.get_layer("age_dist").output}, name=f"member_{index}")
        out = own(inputs)
        genders.append(out["gender_out"])
        dists.append(out["age_dist"])
    dist = layers.Average(name="age_dist")(dists)
    outputs = {"gender_out": layers.Average(name="gender_out")(genders), "age_dist": dist,
               "age_out": ExpectedAge(name="age_out")(dist)}
    return keras.Model(inputs, outputs, name=name)


def _check_members(cards: Sequence[dict], paths: Sequence[Path]) -> None:
    first = cards[0]
    for card, path in zip(cards[1:], paths[1:]):
        for key in _SHARED_INPUT:
            if card["input"].get(key) != first["input"].get(key):
                raise ValueError(f"{path} takes input {key}={card['input'].get(key)!r}, {paths[0]} "
                                 f"{first['input'].get(key)!r}: members must share their input")
        if tta_settings(card) != tta_settings(first):
            raise ValueError(f"{path} is served with test-time views {tta_settings(card)}, {paths[0]} with "
                             f"{tta_settings(first)}: members must be served alike")
        if card["data"].get("fingerprint") != first["data"].get("fingerprint"):
            raise ValueError(f"{path} and {paths[0]} were trained on different data (fingerprints "
                             f"{card['data'].get('fingerprint')} and {first['data'].get('fingerprint')})")
    for card, path in zip(cards, paths):
        require_train_fit(card, path, "the ensemble's read-out")


def _member_record(path: Path, card: dict) -> dict[str, Any]:
    training = card.get("training", {})
    return {"file": path.name, "name": card.get("name"), "sha256": file_sha256(path),
            "parameters": card.get("parameters"), "config": card.get("config"),
            "epochs_completed": training.get("epochs_completed"),
            "wall_seconds_all_stages": training.get("wall_seconds_all_stages", training.get("wall_seconds")),
            "machine": training.get("machine"), "history": training.get("history", []),
            "metrics": {split: {k: card["metrics"][split][k] for k in ("age_mae", "gender_accuracy")}
                        for split in ("val", "test") if split in card.get("metrics", {})}}


def combine(member_paths: Sequence[str | os.PathLike], name: str, folder: str | os.PathLike | None = None, *,
            models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """Average the models at ``member_paths`` into ``models_dir/<name>.keras`` with its card; returns the card.

    The members must share input and test-time views and have been trained on this data (the card's
    fingerprint), on the train split only. The card's training time is the sum of the members'.
    """
    paths = [Path(path) for path in member_paths]
    if len(paths) < 2:
        raise ValueError("give at least two models to combine")
    if len({path.resolve() for path in paths}) != len(paths):
        raise ValueError("the same model is named twice; an ensemble averages different models")
    output = Path(models_dir) / f"{name}.keras"
    if output.resolve() in {path.resolve() for path in paths}:
        raise ValueError(f"{output} is one of the members; write the ensemble under another name")
    loaded = [load_model(path) for path in paths]
    cards = [card for _, card in loaded]
    _check_members(cards, paths)
    config = dataclasses.replace(TrainConfig.from_dict(cards[0]["config"]), age_readout="val")
    # the training faces' labels are needed (the metrics' baselines), not their pixels
    arrays, data_info = load_arrays(config, folder, decode=("val", "test"))
    require_same_data(cards[0], paths[0], data_info)
    data_info["fit_splits"] = ["train"]
    model, readout = choose_age_readout(build_ensemble([m for m, _ in loaded], name=name), config, *arrays["val"])
    tta = tta_settings(cards[0])
    members = [_member_record(path, card) for path, card in zip(paths, cards)]
    seconds = float(sum(member["wall_seconds_all_stages"] or 0.0 for member in members))
    card = {
        "name": name,
        "architecture": "ensemble",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": int(model.count_params()),
        "input": cards[0]["input"],
        "outputs": {"gender_out": "P(female), the members' mean", "age_out": "age in years",
                    "age_dist": "P(age = 0..116), the members' mean"},
        **tta,
        "members": members,
        "data": data_info,
        "training": {
            # the members are trained one after another, so the ensemble's training time is their sum
            "wall_seconds": round(seconds, 1), "wall_seconds_all_stages": round(seconds, 1),
            "epochs_completed": "+".join(str(member["epochs_completed"]) for member in members),
            "machine": " / ".join(sorted({member["machine"] for member in members if member["machine"]})) or None,
        },
        "metrics": split_metrics(model, tta, arrays, arrays["train"][1]),
        "age_readout": readout,
    }
    save_model_atomic(model, output, card)
    return card


@dataclasses.dataclass(frozen=True)
class EnsembleRecipe:
    """How to train an ensemble with one command: its name and its members' training configs.

    A JSON file ``{"name": ..., "members": [{"config": "agenet.json", "name": ...}, ...]}``: each member is a
    training config file (a path relative to the recipe's folder) and any fields of it to change. The members
    are trained one after another, then combined (:func:`combine`) into ``<name>.keras``.
    """

    name: str
    members: tuple[dict[str, Any], ...]
    folder: Path = Path(".")

    @staticmethod
    def describes(path: str | os.PathLike) -> bool:
        """Whether the config file at ``path`` is an ensemble recipe (it lists members) rather than one run's."""
        values = json.loads(Path(path).read_text())
        return isinstance(values, dict) and "members" in values

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> EnsembleRecipe:
        path = Path(path)
        values = json.loads(path.read_text())
        unknown = set(values) - {"name", "members"}
        if unknown:
            raise ValueError(f"{path}: unknown ensemble recipe settings {sorted(unknown)}; it takes name and members")
        members = values.get("members")
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) and "config" in m
                                                                         for m in members):
            raise ValueError(f"{path}: members must list two or more entries like {{'config': FILE, ...}}")
        if not values.get("name"):
            raise ValueError(f"{path}: an ensemble recipe needs a name (the model file it writes)")
        return cls(name=values["name"], members=tuple(members), folder=path.parent)

    def member_configs(self, **overrides: Any) -> list[TrainConfig]:
        """The members' training configs, each with ``overrides`` on top (e.g. ``epochs=1`` for a quick run)."""
        configs = []
        for member in self.members:
            settings = {k: v for k, v in member.items() if k != "config"}
            configs.append(TrainConfig.from_json(self.folder / member["config"], **{**settings, **overrides}))
        names = [config.output_name for config in configs]
        if len(set(names)) != len(names) or self.name in names:
            raise ValueError(f"ensemble {self.name!r}: its members need names of their own, got {names}")
        return configs


def train_ensemble(recipe: EnsembleRecipe, folder: str | os.PathLike | None = None, *,
                   models_dir: Path = MODELS_DIR, runs_dir: Path = RUNS_DIR, overrides: dict[str, Any] | None = None,
                   fresh: bool = False, verbose: int = 2) -> dict[str, Any]:
    """Train (or resume) each member, then combine them into ``models_dir/<name>.keras``. Returns its card.

    The members' models go to ``runs_dir/<name>_members/`` and their checkpoints to ``runs_dir`` as usual, so an
    interrupted ensemble resumes with the member it was training.
    """
    members_dir = Path(runs_dir) / f"{recipe.name}_members"
    paths = []
    for config in recipe.member_configs(**(overrides or {})):
        train(config, folder, models_dir=members_dir, runs_dir=Path(runs_dir), fresh=fresh, verbose=verbose)
        paths.append(members_dir / f"{config.output_name}.keras")
    return combine(paths, recipe.name, folder, models_dir=models_dir)



def _print_ensemble(card: dict) -> None:
    val, test = card["metrics"]["val"], card["metrics"]["test"]
    print(f"{card['name']}: mean of {len(card['members'])} models; val age MAE {val['age_mae']:.2f} y, gender "
          f"{100 * val['gender_accuracy']:.2f} %; test age MAE {test['age_mae']:.2f} y, gender "
          f"{100 * test['gender_accuracy']:.2f} % ({card['training']['wall_seconds'] / 60:.1f} training minutes "
          "in all)")


def main(argv: list[str] | None = None) -> int:
    """``combine`` and ``train`` (an ensemble recipe), with the options the ``agegender`` command had for them."""
    parser = argparse.ArgumentParser(prog="research/ensemble.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("combine", help="average trained models (one input, their own backbones) into one model")
    p.add_argument("models", nargs="+", help="two or more model .keras files, trained on the same data")
    p.add_argument("--name", required=True, help="the combined model's name: written as runs/NAME/NAME.keras")
    p.add_argument("--data", help="UTKFace folder the models were trained on (default: as for train)")
    p.add_argument("--models-dir", help="where the combined model and card go (default: runs/NAME/)")
    p = sub.add_parser("train", help="train an ensemble recipe's members, then combine them")
    p.add_argument("--config", required=True, help="an ensemble recipe listing members (see EnsembleRecipe)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field of every member's config")
    p.add_argument("--data", help="UTKFace folder (default: $UTKFACE_DIR, data/UTKFace, data/sample)")
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start again")
    p.add_argument("--models-dir", help="where the combined model and card go (default: runs/NAME/)")
    p.add_argument("--runs-dir", default=str(RUNS_DIR), help="checkpoints and history (default: runs/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "combine":
            card = combine(args.models, args.name, args.data, models_dir=_output_dir(args.models_dir, args.name))
        else:
            recipe = EnsembleRecipe.from_json(args.config)
            card = train_ensemble(recipe, args.data, models_dir=_output_dir(args.models_dir, recipe.name),
                                  runs_dir=Path(args.runs_dir), overrides=_key_values(args.set, "--set"),
                                  fresh=args.fresh)
    except (ModelFileError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_ensemble(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
