"""VGG16 transfer learning: training-step throughput on this CPU and the estimated full-run time.

Random weights (ImageNet weights cannot be downloaded here; the speed is the same), 200x200 RGB,
batch 32 as in the published recipe. Phase 1 trains the heads on the frozen base; phase 2 also
trains block5.

    python benchmarks/vgg16_speed.py [--steps 3]
"""

from __future__ import annotations

import argparse
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from _timing import train_images_per_second  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from agegender.config import TrainConfig  # noqa: E402
from agegender.models import build_vgg16_transfer  # noqa: E402
from agegender.models.transfer import VGG16Recipe  # noqa: E402
from agegender.training.loop import compile_model  # noqa: E402

TRAIN_IMAGES = 17_075


def images_per_second(fine_tune: bool, steps: int, batch: int = 32) -> float:
    model = build_vgg16_transfer(weights=None, fine_tune_block5=fine_tune)
    compile_model(model, TrainConfig(batch_size=batch), 100)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, 200, 200, 3)).astype("float32")
    y = {"gender_out": rng.integers(0, 2, (batch, 1)).astype("float32"),
         "age_out": rng.integers(1, 80, (batch, 1)).astype("float32")}
    return train_images_per_second(model, x, y, steps, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    recipe = VGG16Recipe()
    print(f"VGG16 transfer, 200x200 RGB, batch 32, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    total = 0.0
    for phase, fine_tune, epochs in (("1: heads, base frozen", False, recipe.head_epochs),
                                     ("2: block5 fine-tuned", True, recipe.finetune_epochs)):
        ips = images_per_second(fine_tune, args.steps)
        hours = epochs * TRAIN_IMAGES / ips / 3600
        total += hours
        print(f"phase {phase:<24} {ips:6.1f} images/s  {TRAIN_IMAGES / ips / 60:6.1f} min/epoch  "
              f"{epochs} epochs (at most, early stopping) = {hours:.1f} h")
    print(f"full recipe at most {total:.1f} h on this CPU (the published recipe's 200 epochs would take "
          f"~{200 * total / (recipe.head_epochs + recipe.finetune_epochs):.0f} h)")


if __name__ == "__main__":
    main()
