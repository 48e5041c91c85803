"""The age head on the face descriptor's inner features (`agegender.models.face_age`) and its mixing layer."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.config import TrainConfig  # noqa: E402
from agegender.models import AGE_BINS, MixedDistribution  # noqa: E402
from agegender.models.face_age import choose_age_weight, fit_age_heads, median_ages  # noqa: E402
from agegender.models.feature_heads import MIX_WEIGHTS as AGE_MIX_WEIGHTS  # noqa: E402


def _peaked(ages: np.ndarray) -> np.ndarray:
    dist = np.zeros((len(ages), AGE_BINS), "float32")
    dist[np.arange(len(ages)), ages] = 1.0
    return dist


def test_median_of_a_one_year_distribution_is_that_year():
    np.testing.assert_allclose(median_ages(_peaked(np.array([0, 30, 80]))), [0.0, 30.0, 80.0], atol=1e-5)


def test_the_age_weight_is_the_one_with_the_lowest_val_error_and_ties_go_to_agenet():
    ages = np.array([20, 40, 60])
    right, wrong = _peaked(ages), _peaked(np.array([60, 20, 40]))
    best, mae = choose_age_weight(ages.astype(float), right, wrong, ages)  # AgeNet right, the head wrong
    assert best == 1.0 and mae["1.0"] == 0.0 and mae["0.0"] > 10
    best, mae = choose_age_weight(ages + 10.0, wrong, right, ages)  # the head right, AgeNet 10 years off
    assert best < 0.5 and mae[f"{best:.1f}"] == 0.0 and mae["1.0"] == 10.0
    best, _ = choose_age_weight(ages.astype(float), right, right, ages)  # all tie: AgeNet alone
    assert best == AGE_MIX_WEIGHTS[0] == 1.0


@pytest.mark.slow
def test_age_heads_learn_age_from_features_that_carry_it():
    rng = np.random.default_rng(0)
    ages = rng.integers(1, 90, 1500)
    features = np.c_[ages / 10 + rng.normal(0, 0.3, len(ages)), rng.normal(0, 1, (len(ages), 7))] * 5 + 3
    config = TrainConfig(age_sigma=0.8, age_sigma_per_year=0.045, age_balance=0.5)
    heads = fit_age_heads(features, ages, config, seeds=(0, 1), epochs=15)
    test_ages = rng.integers(1, 90, 300)
    test = np.c_[test_ages / 10 + rng.normal(0, 0.3, len(test_ages)), rng.normal(0, 1, (len(test_ages), 7))] * 5 + 3
    dist = heads.predict(test, verbose=0)
    np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-5)
    mae = np.abs(median_ages(dist) - test_ages).mean()
    assert mae < 8.0 < np.abs(np.median(ages) - test_ages).mean()  # far better than one age for everyone
    with pytest.raises(ValueError, match="one per face"):
        fit_age_heads(features[:10], ages[:9], config)


def test_mixed_distribution_weights_the_first_input_and_survives_saving(tmp_path):
    p, q = _peaked(np.array([10])), _peaked(np.array([50]))
    mixed = MixedDistribution(0.3)([p, q])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mixed)[0, [10, 50]], [0.3, 0.7])
    a, b = keras.Input((AGE_BINS,)), keras.Input((AGE_BINS,))
    model = keras.Model([a, b], MixedDistribution(0.3, name="mix")([a, b]))
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").get_layer("mix").weight == 0.3
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        MixedDistribution(1.5)
