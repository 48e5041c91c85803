"""VGG16 transfer learning in two phases: heads on a frozen base, then block5 at a lower learning rate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import MODELS_DIR, RUNS_DIR, TrainConfig
from ..serving.modelio import write_json_atomic
from ..training.loop import train


@dataclass
class VGG16Recipe:
    """The second reference project's recipe, with early stopping instead of a blind 200 epochs."""

    name: str = "vgg16_transfer"
    weights: str | None = "imagenet"  # "imagenet", a local .h5 path, or None (tests only)
    image_size: int = 200
    batch_size: int = 32
    head_epochs: int = 10
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 20
    finetune_learning_rate: float = 1e-5
    patience: int = 3
    augment: bool = True
    limit: int = 0
    seed: int = 42

    def phase_configs(self, models_dir: Path) -> tuple[TrainConfig, TrainConfig]:
        common = dict(model="vgg16_transfer", image_size=self.image_size, color_mode="rgb",
                      batch_size=self.batch_size, augment=self.augment, seed=self.seed, limit=self.limit,
                      early_stopping_patience=self.patience)
        heads = TrainConfig(name=f"{self.name}_phase1", epochs=self.head_epochs,
                            learning_rate=self.head_learning_rate,
                            model_kwargs={"weights": self.weights, "fine_tune_block5": False}, **common)
        # Phase 2 starts from every weight of phase 1, so the base needs no weights of its own here.
        finetune = TrainConfig(name=self.name, epochs=self.finetune_epochs, learning_rate=self.finetune_learning_rate,
                               model_kwargs={"weights": None, "fine_tune_block5": True},
                               init_weights=str(models_dir / f"{self.name}_phase1.keras"), **common)
        return heads, finetune


def train_vgg16_two_phase(recipe: VGG16Recipe, folder: str | os.PathLike | None = None, *,
                          models_dir: Path = MODELS_DIR, runs_dir: Path = RUNS_DIR, verbose: int = 2) -> dict[str, Any]:
    """Run both phases (each resumable) and return the final model card, which records both."""
    heads, finetune = recipe.phase_configs(models_dir)
    phase1 = train(heads, folder, models_dir=models_dir, runs_dir=runs_dir, verbose=verbose)
    card = train(finetune, folder, models_dir=models_dir, runs_dir=runs_dir, verbose=verbose)
    card["phases"] = [
        {"phase": "heads, base frozen", "weights": recipe.weights, "training": phase1["training"],
         "val": {k: phase1["metrics"]["val"][k] for k in ("age_mae", "gender_accuracy")}},
        {"phase": "block5 fine-tuned", "training": card["training"],
         "val": {k: card["metrics"]["val"][k] for k in ("age_mae", "gender_accuracy")}},
    ]
    write_json_atomic(models_dir / f"{recipe.name}.json", card)
    return card
