"""Small MLP heads on fixed features (the face-recognition network's inner blocks), trained in seconds.

The features are computed once per training face, so there is no augmentation; several heads with different
seeds are averaged, because one head's val figures move with its seed (``recipes.md``: ``agenet_fra``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

HEAD_SEEDS: tuple[int, ...] = (0, 1, 2)
HEAD_EPOCHS = 30
HEAD_HIDDEN = 512
HEAD_BATCH = 256
HEAD_LEARNING_RATE = 1e-3
HEAD_WEIGHT_DECAY = 0.02
#: The weights of AgeNet's part tried on val when a head's output is mixed with AgeNet's (1.0: AgeNet alone).
#: Ties go to the larger weight.
MIX_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10, -1, -1))


def build_head(mean: np.ndarray, std: np.ndarray, units: int, activation: str | None, name: str) -> keras.Model:
    """Features (standardised inside by ``mean`` and ``std``) -> dropout, 512 ReLU units, dropout -> ``units``."""
    inputs = keras.Input((len(mean),), name="features")
    x = layers.Normalization(mean=mean, variance=np.square(std), name="standardise")(inputs)
    x = layers.Dropout(0.2, name="input_dropout")(x)
    x = layers.Dense(HEAD_HIDDEN, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.5, name="hidden_dropout")(x)
    return keras.Model(inputs, layers.Dense(units, activation=activation, name="output")(x), name=name)


def fit_heads(features: np.ndarray, targets: np.ndarray, loss: keras.losses.Loss, units: int,
              activation: str | None, name: str, *, sample_weight: np.ndarray | None = None,
              seeds: tuple[int, ...] = HEAD_SEEDS, epochs: int = HEAD_EPOCHS) -> keras.Model:
    """One head per seed trained on ``features`` -> ``targets``; returned as one model (``name``) whose output is
    the heads' mean."""
    features = np.asarray(features, "float32")
    if len(features) != len(targets) or not len(features):
        raise ValueError(f"{len(features)} feature rows for {len(targets)} targets; need one per face, at least one")
    mean, std = features.mean(0), features.std(0) + 1e-6
    heads = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        head = build_head(mean, std, units, activation, name=f"{name}_{seed}")
        head.compile(keras.optimizers.AdamW(HEAD_LEARNING_RATE, weight_decay=HEAD_WEIGHT_DECAY), loss)
        head.fit(features, targets, sample_weight=sample_weight, epochs=epochs, batch_size=HEAD_BATCH, verbose=0)
        served = build_head(mean, std, units, activation, name=head.name)  # uncompiled: no optimizer state saved
        served.set_weights(head.get_weights())
        heads.append(served)
    inputs = keras.Input((features.shape[1],), name="features")
    outputs = [head(inputs) for head in heads]
    output = outputs[0] if len(outputs) == 1 else layers.Average(name="mean_of_heads")(outputs)
    return keras.Model(inputs, output, name=name)
