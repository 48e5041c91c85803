"""Shared by the throughput benchmarks: images/s of ``train_on_batch`` after a warm-up; the batch-norm switch."""

from __future__ import annotations

import time


def train_images_per_second(model, x, y, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)


def use_keras_batch_norm() -> None:
    """Make the backbone builder use Keras's unfused layer (for before/after measurements only)."""
    import keras

    from agegender.backbones import efficientnet_lite

    efficientnet_lite.BatchNormalization = keras.layers.BatchNormalization
