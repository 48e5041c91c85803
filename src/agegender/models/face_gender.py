"""dlib's network's own gender logit, mixed with AgeNet's: the heads ``agegender add-descriptor`` fits.

dlib's network tells adults' gender apart about as well as AgeNet, but errs on other faces, so a mix of the two
logits is right more often than either (``research/results/face_descriptor_probe.md``). The logit comes from MLP
heads on the network's inner features (``fit_gender_heads``, the default) or from a logistic regression on its 128-D
descriptor (``fit_regression``); ``choose_weight`` picks AgeNet's weight in the mix on val. The age counterpart is
``face_age``; the step that fits both and builds the served model is ``add_descriptor``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..training.teacher import fit_logistic, logit
from .feature_heads import MIX_WEIGHTS, fit_heads

REGRESSION_L2 = 1.0


def fit_regression(descriptors: np.ndarray, genders: np.ndarray, l2: float = REGRESSION_L2) -> tuple[np.ndarray, float]:
    """Logistic regression for P(female) on standardised descriptors, as one linear map: ``(kernel, bias)``."""
    mean, std = descriptors.mean(0), descriptors.std(0) + 1e-8
    w = fit_logistic(np.c_[(descriptors - mean) / std, np.ones(len(descriptors))], np.asarray(genders), l2=l2)
    kernel = w[:-1] / std
    return kernel, float(w[-1] - mean @ kernel)


def regression_layer(kernel: np.ndarray, bias: float) -> layers.Dense:
    """The fitted regression as a Keras layer (``descriptor_gender``) giving its logit."""
    layer = layers.Dense(1, name="descriptor_gender")
    layer.build((None, len(kernel)))
    layer.set_weights([np.asarray(kernel, "float32").reshape(-1, 1), np.array([bias], "float32")])
    return layer


def fit_gender_heads(features: np.ndarray, genders: np.ndarray) -> keras.Model:
    """MLP heads on the inner features, each giving a logit of P(female); one model giving their mean logit."""
    return fit_heads(features, np.asarray(genders, "float32").reshape(-1, 1),
                     keras.losses.BinaryCrossentropy(from_logits=True), 1, None, "descriptor_gender")


def choose_weight(p_agenet: np.ndarray, z: np.ndarray, genders: np.ndarray) -> tuple[float, dict[str, float]]:
    """The weight of AgeNet's logit with the best accuracy on (val) faces, and every weight's accuracy in %."""
    accuracy = {f"{a:.1f}": round(100 * float(np.mean((a * logit(p_agenet) + (1 - a) * z > 0) == genders)), 3)
                for a in MIX_WEIGHTS}
    best = max(MIX_WEIGHTS, key=lambda a: accuracy[f"{a:.1f}"])  # max keeps the first, the larger weight
    return best, accuracy
