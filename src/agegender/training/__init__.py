"""Training: one run with checkpoints and a time budget (loop), a whole recipe's stages into one run folder
(recipe), the learning-rate schedule (schedules) and the distillation teacher (teacher)."""

from .loop import train
from .recipe import run_recipe

__all__ = ["run_recipe", "train"]
