"""Shared by the speed benchmarks: a compiled AgeNet with a random batch, images/s of ``train_on_batch``
after a warm-up, and the median latency of a call. The lab's scripts in ``research/`` put this folder on their
path to use it too."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def agenet_with_random_batch(size: int, batch: int = 64, **model_kwargs):
    """A compiled AgeNet for ``size`` px and one batch of random faces and targets: ``(model, x, y)``.

    Speed does not depend on the pixels, so the benchmarks need no data. ``model_kwargs`` go to
    :func:`~agegender.models.build_agenet` (e.g. ``fused_batch_norm=False`` for Keras's own layer).
    """
    import numpy as np

    from agegender.config import TrainConfig
    from agegender.data.pipeline import soft_age_labels
    from agegender.models import build_agenet
    from agegender.training.loop import compile_model

    model = build_agenet((size, size, 3), **model_kwargs)
    compile_model(model, TrainConfig(optimizer="adamw"), 100)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    ages = rng.integers(1, 80, (batch, 1)).astype("float32")
    y = {"gender_out": rng.integers(0, 2, (batch, 1)).astype("float32"), "age_out": ages,
         "age_dist": soft_age_labels(ages).numpy()}
    return model, x, y


def train_images_per_second(model, x, y, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - start)



def median_ms(call: Callable[[], object], repeats: int, warmup: int = 20) -> float:
    """Median wall time of ``call`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
