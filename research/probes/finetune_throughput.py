"""Training throughput of AgeNet by input size and fine-tuning depth (images/s, batch 64, AdamW).

Freezing the high-resolution early blocks removes most of the backward pass, which is what makes
fine-tuning fit a 2-core CPU; this measures how much. Random pixels: speed does not depend on content.

    python research/probes/finetune_throughput.py [--steps 4] [--keras-batch-norm]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _timing (shared with benchmarks/)

from _timing import agenet_with_random_batch, train_images_per_second  # noqa: E402


SETTINGS = ((96, None), (112, None), (112, "block2"), (112, "block3"), (112, "block4"), (128, None), (128, "block2"))


def images_per_second(size: int, trainable_from: str | None, steps: int, batch: int = 64,
                      fused_batch_norm: bool = True) -> float:
    model, x, y = agenet_with_random_batch(size, batch, trainable_from=trainable_from,
                                           fused_batch_norm=fused_batch_norm)
    return train_images_per_second(model, x, y, steps, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype-policy", default="float32",
                        help="Keras dtype policy, e.g. mixed_bfloat16 (AMX/AVX-512 BF16 CPUs)")
    parser.add_argument("--keras-batch-norm", action="store_true",
                        help="build the backbone with Keras's unfused BatchNormalization (the speed before 2026-12-01)")
    args = parser.parse_args()
    import keras

    keras.mixed_precision.set_global_policy(args.dtype_policy)
    print(f"dtype policy {args.dtype_policy}, {'Keras' if args.keras_batch_norm else 'fused'} batch normalization")
    print(f"AgeNet training throughput, batch 64, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'input':>6} {'trainable from':>15} {'images/s':>9} {'min/epoch (17,075)':>19}")
    for size, start in SETTINGS:
        ips = images_per_second(size, start, args.steps, fused_batch_norm=not args.keras_batch_norm)
        print(f"{size:>6} {start or 'all layers':>15} {ips:>9.1f} {17_075 / ips / 60:>19.1f}", flush=True)


if __name__ == "__main__":
    main()
