"""An age head on dlib's inner features, mixed with AgeNet's age distribution (part of `agegender add-descriptor`).

dlib's 128-D descriptor is trained to ignore what changes within one person, so it knows little about age (ridge
MAE 10 years). The blocks inside the same network do not: a small MLP on their mean-pooled outputs
(``AGE_FEATURE_BLOCKS``, 704 features) predicts age about as well as AgeNet alone, and errs on other faces, so a
mixture of the two distributions is better than either (``benchmarks/results/recipes.md``, ``agenet_fra``). The
features are computed once for the training faces (the network is fixed), so the heads train in seconds.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from .config import TrainConfig
from .models import AGE_BINS, MedianAge
from .pipeline import age_balance_weights, soft_age_labels

HEAD_SEEDS: tuple[int, ...] = (0, 1, 2)  # three heads averaged: one head's 60+ MAE moves by 0.3 years with its seed
HEAD_EPOCHS = 30
HEAD_HIDDEN = 512
HEAD_BATCH = 256
HEAD_LEARNING_RATE = 1e-3
HEAD_WEIGHT_DECAY = 0.02
#: The weights of AgeNet's distribution tried on val (1.0: AgeNet alone, as served without the head).
AGE_MIX_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10, -1, -1))


def build_age_head(mean: np.ndarray, std: np.ndarray, name: str = "age_head") -> keras.Model:
    """Features (standardised inside by ``mean`` and ``std``) -> a softmax over 0..MAX_AGE years."""
    inputs = keras.Input((len(mean),), name="features")
    x = layers.Normalization(mean=mean, variance=np.square(std), name="standardise")(inputs)
    x = layers.Dropout(0.2, name="input_dropout")(x)
    x = layers.Dense(HEAD_HIDDEN, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.5, name="hidden_dropout")(x)
    return keras.Model(inputs, layers.Dense(AGE_BINS, activation="softmax", name="age_dist")(x), name=name)


def fit_age_heads(features: np.ndarray, ages: np.ndarray, config: TrainConfig, *,
                  seeds: tuple[int, ...] = HEAD_SEEDS, epochs: int = HEAD_EPOCHS) -> keras.Model:
    """One head per seed, trained on ``features`` with the soft labels and age-band balance of AgeNet's
    ``config``; returned as one model whose output is their mean distribution."""
    features = np.asarray(features, "float32")
    if len(features) != len(ages) or not len(features):
        raise ValueError(f"{len(features)} feature rows for {len(ages)} ages; need one per face, at least one")
    mean, std = features.mean(0), features.std(0) + 1e-6
    targets = soft_age_labels(tf.constant(ages, tf.float32), config.age_sigma, config.age_sigma_per_year).numpy()
    weights = (age_balance_weights(np.asarray(ages), config.age_balance, config.age_balance_bin_years)
               if config.age_balance else None)
    heads = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        head = build_age_head(mean, std, name=f"age_head_{seed}")
        head.compile(keras.optimizers.AdamW(HEAD_LEARNING_RATE, weight_decay=HEAD_WEIGHT_DECAY),
                     keras.losses.KLDivergence())
        head.fit(features, targets, sample_weight=weights, epochs=epochs, batch_size=HEAD_BATCH, verbose=0)
        served = build_age_head(mean, std, name=head.name)  # uncompiled: the optimizer's state is not saved with it
        served.set_weights(head.get_weights())
        heads.append(served)
    inputs = keras.Input((features.shape[1],), name="features")
    dists = [head(inputs) for head in heads]
    output = dists[0] if len(dists) == 1 else layers.Average(name="mean_of_heads")(dists)
    return keras.Model(inputs, output, name="descriptor_age")


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
    for a in AGE_MIX_WEIGHTS:
        predicted = agenet_ages if a == 1.0 else median_ages(a * agenet_dist + (1 - a) * head_dist)
        mae[f"{a:.1f}"] = round(float(np.mean(np.abs(np.ravel(predicted) - ages))), 4)
    best = min(AGE_MIX_WEIGHTS, key=lambda a: mae[f"{a:.1f}"])  # min keeps the first, the larger weight
    return best, mae
