"""An age head on dlib's inner features, mixed with AgeNet's age distribution (part of `agegender add-descriptor`).

dlib's 128-D descriptor is trained to ignore what changes within one person, so it knows little about age (ridge
MAE 10 years). The blocks inside the same network do not: a small MLP on their mean-pooled outputs
(``AGE_FEATURE_BLOCKS``, 704 features) predicts age about as well as AgeNet alone, and errs on other faces, so a
mixture of the two distributions is better than either (``research/results/recipes.md``, ``agenet_fra``). The
features are computed once for the training faces (the network is fixed), so the heads train in seconds.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ..config import TrainConfig
from ..data.pipeline import age_balance_weights, soft_age_labels
from .builders import AGE_BINS, MedianAge
from .feature_heads import HEAD_EPOCHS, HEAD_SEEDS, MIX_WEIGHTS, fit_heads

def fit_age_heads(features: np.ndarray, ages: np.ndarray, config: TrainConfig, *,
                  seeds: tuple[int, ...] = HEAD_SEEDS, epochs: int = HEAD_EPOCHS) -> keras.Model:
    """Heads (``feature_heads``) giving a softmax over 0..MAX_AGE years, trained with the soft labels and age-band
    balance of AgeNet's ``config``; one model whose output is their mean distribution."""
    targets = soft_age_labels(tf.constant(ages, tf.float32), config.age_sigma, config.age_sigma_per_year).numpy()
    weights = (age_balance_weights(np.asarray(ages), config.age_balance, config.age_balance_bin_years)
               if config.age_balance else None)
    return fit_heads(features, targets, keras.losses.KLDivergence(), AGE_BINS, "softmax", "descriptor_age",
                     sample_weight=weights, seeds=seeds, epochs=epochs)


def median_ages(distributions: np.ndarray) -> np.ndarray:
    """The served read-out (``MedianAge``) of age distributions, in years."""
    return keras.ops.convert_to_numpy(MedianAge()(keras.ops.convert_to_tensor(distributions, "float32")))[:, 0]


def choose_age_weight(agenet_ages: np.ndarray, agenet_dist: np.ndarray, head_dist: np.ndarray,
                      ages: np.ndarray) -> tuple[float, dict[str, float]]:
    """The weight of AgeNet's distribution with the lowest age MAE on (val) faces, and every weight's MAE.

    At 1.0 the age is AgeNet's as served without the head (``agenet_ages``); below it, the median of
    ``a * agenet_dist + (1 - a) * head_dist``. Ties go to the larger weight.
    """
    ages = np.asarray(ages, "float64")
    mae = {}
    for a in MIX_WEIGHTS:
        predicted = agenet_ages if a == 1.0 else median_ages(a * agenet_dist + (1 - a) * head_dist)
        mae[f"{a:.1f}"] = round(float(np.mean(np.abs(np.ravel(predicted) - ages))), 4)
    best = min(MIX_WEIGHTS, key=lambda a: mae[f"{a:.1f}"])  # min keeps the first, the larger weight
    return best, mae
