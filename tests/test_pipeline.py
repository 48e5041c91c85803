"""Training inputs: soft age labels, age-band balancing weights, and batches with sample weights."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from agegender.config import TrainConfig  # noqa: E402
from agegender.data.pipeline import age_balance_weights, make_dataset, soft_age_labels  # noqa: E402
from agegender.evaluation.metrics import age_band  # noqa: E402


def _label_mean(age: float, sigma: float, per_year: float = 0.0) -> float:
    labels = soft_age_labels(np.array([age]), sigma, per_year).numpy()[0]
    assert labels.sum() == pytest.approx(1.0, abs=1e-5)
    return float(labels @ np.arange(len(labels)))


def test_fixed_width_label_is_biased_for_babies():
    # The reason for age-dependent widths: a 2-year Gaussian cut off at 0 centres a 1-year-old near 1.8.
    assert _label_mean(1, 2.0) > 1.7
    assert _label_mean(30, 2.0) == pytest.approx(30, abs=1e-3)


def test_age_dependent_width_keeps_babies_centred():
    assert _label_mean(1, 0.8, 0.045) == pytest.approx(1.0, abs=0.1)
    narrow, wide = (soft_age_labels(np.array([age]), 0.8, 0.045).numpy()[0] for age in (5, 70))
    assert narrow.max() > 2 * wide.max()  # older ages get a wider (less certain) label


def test_balance_weights_favour_rare_bands_and_average_one():
    ages = np.array([1] * 10 + [30] * 80 + [70] * 10)
    weights = age_balance_weights(ages, 0.5)
    assert weights.mean() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] == pytest.approx(weights[-1])  # same share -> same weight
    assert weights[0] / weights[50] == pytest.approx((10 / 80) ** -0.5, rel=1e-5)
    assert np.allclose(age_balance_weights(ages, 0.0), 1.0)


def test_balance_weights_use_the_report_bands():
    ages = np.array([12, 13, 19, 20, 59, 60])
    weights = age_balance_weights(ages, 1.0)
    bands = age_band(ages)
    for band in set(bands):
        assert len(set(weights[bands == band].round(6))) == 1


def test_balance_weights_by_year_bins_lift_the_oldest():
    ages = np.array([65] * 40 + [95] * 4 + [30] * 56)
    by_band = age_balance_weights(ages, 0.5)
    assert by_band[0] == pytest.approx(by_band[40])  # one 60+ band
    by_decade = age_balance_weights(ages, 0.5, bin_years=10)
    assert by_decade.mean() == pytest.approx(1.0, abs=1e-6)
    assert by_decade[40] / by_decade[0] == pytest.approx((4 / 40) ** -0.5, rel=1e-5)
    oldest = age_balance_weights(np.array([30] * 8 + [92, 115]), 1.0, bin_years=10)
    assert oldest[8] == pytest.approx(oldest[9])  # 90 and up are one bin


def test_dataset_carries_sample_weights_through_augmentation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    ages, genders = np.array([1, 5, 30, 30, 45, 80]), np.array([0, 1, 0, 1, 0, 1])
    weights = age_balance_weights(ages, 0.5)
    ds = make_dataset(images, ages, genders, batch_size=6, training=True, augment=True, age_distribution=True,
                      age_sigma=0.8, age_sigma_per_year=0.045, sample_weights=weights)
    x, y, w = next(iter(ds))
    assert x.shape == (6, 16, 16, 3) and set(y) == {"gender_out", "age_out", "age_dist"}
    order = np.argsort(y["age_out"].numpy().ravel(), kind="stable")  # the batch is shuffled
    assert np.allclose(np.sort(w.numpy()), np.sort(weights)) and np.allclose(w.numpy()[order][:2], weights[:2])
    assert np.allclose(y["age_dist"].numpy() @ np.arange(y["age_dist"].shape[1]), y["age_out"].numpy().ravel(), atol=0.1)


def test_dataset_without_weights_yields_pairs():
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    batch = next(iter(make_dataset(images, np.arange(4), np.zeros(4), batch_size=4, training=False)))
    assert len(batch) == 2


def test_compile_uses_the_mean_loss_weight():
    from agegender.models import build_small_resnet
    from agegender.training.loop import compile_model

    model = build_small_resnet((16, 16, 3), widths=(4, 4))
    compile_model(model, TrainConfig(model="small_resnet", age_loss_weight=2.0, age_mean_loss_weight=0.25,
                                     gender_loss_weight=3.0), steps_per_epoch=1)
    assert model._compile_config.config["loss_weights"] == {"gender_out": 3.0, "age_out": 0.5, "age_dist": 2.0}


def _textured_batch(n: int = 8, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_degrade_resolution_blurs_only_the_chosen_images():
    from agegender.data.pipeline import degrade_resolution

    images = _textured_batch()
    seed = np.array([3, 4], dtype="int32")
    none = degrade_resolution(images, seed, 0.0).numpy()
    every = degrade_resolution(images, seed, 1.0).numpy()
    np.testing.assert_array_equal(none, images)
    assert every.shape == images.shape
    # shrinking to at most 80 % of the side and back removes most pixel-to-pixel detail of random noise
    detail = lambda x: np.abs(np.diff(x, axis=2)).mean()  # noqa: E731
    assert detail(every) < 0.8 * detail(images)
    assert abs(every.mean() - images.mean()) < 2.0  # a blur, not a change of brightness
    half = degrade_resolution(_textured_batch(400, 16), seed, 0.5).numpy()
    changed = np.abs(half - _textured_batch(400, 16)).reshape(400, -1).max(axis=1) > 0
    assert 150 < changed.sum() < 250  # chosen per image


def test_low_resolution_off_reproduces_the_earlier_augmentation():
    # Recipes trained before the option existed must get exactly the same draws at probability 0.
    from agegender.data.pipeline import augment_batch

    images, seed = _textured_batch(), np.array([5, 6], dtype="int32")
    np.testing.assert_array_equal(augment_batch(images, seed).numpy(), augment_batch(images, seed, 0.0).numpy())
    assert not np.array_equal(augment_batch(images, seed).numpy(), augment_batch(images, seed, 1.0).numpy())


def test_low_resolution_probability_out_of_range_is_refused():
    images = np.zeros((4, 8, 8, 3), "uint8")
    with pytest.raises(ValueError, match="between 0 and 1"):
        make_dataset(images, np.ones(4), np.zeros(4), batch_size=2, training=True, augment=True, low_resolution=1.5)


def test_dataset_at_a_smaller_size_averages_pixels_and_keeps_the_full_size_unchanged():
    # progressive resizing's early epochs: the cached 16 px images come out at 8 px, each pixel the mean of 2x2
    images = np.arange(2 * 16 * 16 * 3, dtype=np.float64).reshape(2, 16, 16, 3) % 251
    images = images.astype(np.uint8)
    small = next(iter(make_dataset(images, np.ones(2), np.zeros(2), batch_size=2, training=False, image_size=8)))[0]
    expected = images.astype(np.float32).reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(small.numpy(), expected, rtol=1e-5)
    full = next(iter(make_dataset(images, np.ones(2), np.zeros(2), batch_size=2, training=False, image_size=16)))[0]
    np.testing.assert_array_equal(full.numpy(), images.astype(np.float32))


def test_erase_rectangles_replaces_one_inner_rectangle_of_the_chosen_images():
    from agegender.data.pipeline import ERASE_AREA_RANGE, erase_rectangles

    images = np.full((300, 32, 32, 3), 100.0, "float32")
    seed = np.array([7, 8], dtype="int32")
    np.testing.assert_array_equal(erase_rectangles(images, seed, 0.0).numpy(), images)
    every = erase_rectangles(images, seed, 1.0).numpy()
    changed = (every != 100.0).any(axis=3)  # noise hits exactly 100.0 with probability ~0
    assert changed.any(axis=(1, 2)).all()
    for mask in changed[:50]:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and box.sum() == mask.sum()  # one solid rectangle, nothing outside it
    share = changed.mean(axis=(1, 2))
    low, high = ERASE_AREA_RANGE
    assert share.min() > low / 2 and share.max() < high * 1.5  # rounding to whole pixels aside
    assert 0 <= every.min() and every.max() <= 255
    half = erase_rectangles(images, seed, 0.5).numpy()
    assert 110 < (half != 100.0).any(axis=(1, 2, 3)).sum() < 190  # chosen per image
    np.testing.assert_array_equal(erase_rectangles(images, seed, 0.5).numpy(), half)  # seeded


def test_erasing_off_reproduces_the_earlier_augmentation():
    from agegender.data.pipeline import augment_batch

    images, seed = _textured_batch(), np.array([5, 6], dtype="int32")
    plain = augment_batch(images, seed).numpy()
    np.testing.assert_array_equal(plain, augment_batch(images, seed, 0.0, 0.0).numpy())
    erased = augment_batch(images, seed, 0.0, 1.0).numpy()
    differs = (erased != plain).any(axis=3)
    # the other draws are untouched: outside the rectangle every pixel is as before
    assert differs.any(axis=(1, 2)).all() and differs.mean() < 0.3


def test_erase_probability_out_of_range_is_refused():
    images = np.zeros((4, 8, 8, 3), "uint8")
    with pytest.raises(ValueError, match="augment_erase is a probability"):
        make_dataset(images, np.ones(4), np.zeros(4), batch_size=2, training=True, augment=True, erase=-0.1)


def test_mixup_blends_images_targets_and_weights_with_one_share_per_image():
    from agegender.data.pipeline import mix_batch

    n = 64
    ages = np.linspace(1, 90, n).astype("float32")
    genders = (np.arange(n) % 2).astype("float32")
    # every pixel of image i holds its own age (channel 0) and 100 x its gender (channel 1)
    images = np.zeros((n, 4, 4, 3), "float32")
    images[..., 0], images[..., 1] = ages[:, None, None], 100 * genders[:, None, None]
    targets = {"age_out": ages.reshape(-1, 1), "gender_out": genders.reshape(-1, 1),
               "age_dist": soft_age_labels(ages).numpy()}
    weights = np.linspace(0.5, 2.0, n).astype("float32")
    seed = np.array([3, 4], dtype="int32")
    x, y, w = (t.numpy() if not isinstance(t, dict) else {k: v.numpy() for k, v in t.items()}
               for t in mix_batch(images, targets, weights, seed, 0.2))
    share = (x[:, 0, 0, 0] - ages[::-1]) / (ages - ages[::-1])  # the share of each image's own pixels
    share[n // 2 - 1:n // 2 + 1] = share[0]  # (the middle pair's partners are almost alike: share ill-defined there)
    np.testing.assert_allclose(y["age_out"][:, 0], x[:, 0, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(100 * y["gender_out"][:, 0], x[:, 0, 0, 1], atol=1e-3)
    np.testing.assert_allclose(y["age_dist"].sum(axis=1), 1.0, rtol=1e-5)  # still a distribution
    own = np.r_[:n // 2 - 1, n // 2 + 1:n]
    np.testing.assert_allclose(w[own], (share * weights + (1 - share) * weights[::-1])[own], rtol=1e-4)
    assert ((share[own] > -1e-4) & (share[own] < 1 + 1e-4)).all()
    # Beta(0.2, 0.2) is U-shaped: most images are mostly themselves or mostly their partner
    extreme = (share[own] < 0.1) | (share[own] > 0.9)
    assert 0.4 < extreme.mean() < 0.95
    again = mix_batch(images, targets, {"age_out": weights, "gender_out": weights, "age_dist": weights}, seed, 0.2)
    np.testing.assert_array_equal(again[0].numpy(), x)  # seeded; a dict of weights is blended key by key
    np.testing.assert_allclose(again[2]["gender_out"].numpy(), w, rtol=1e-6)


def test_mixup_leaves_validation_and_the_other_draws_alone():
    images = np.random.default_rng(0).integers(0, 255, (16, 8, 8, 3), dtype=np.uint8)
    ages, genders = np.arange(16.0), (np.arange(16) % 2).astype(float)
    common = dict(batch_size=16, seed=5, age_distribution=True)
    plain = next(iter(make_dataset(images, ages, genders, training=True, augment=True, **common)))
    mixed = next(iter(make_dataset(images, ages, genders, training=True, augment=True, mixup=0.4, **common)))
    assert not np.allclose(plain[0].numpy(), mixed[0].numpy())
    # same shuffle and augmentation underneath: the blend of the plain batch's ends reproduces the mixed one
    share = (mixed[1]["age_out"].numpy() - plain[1]["age_out"].numpy()[::-1]) / (
        plain[1]["age_out"].numpy() - plain[1]["age_out"].numpy()[::-1])
    expected = share[:, :, None, None] * plain[0].numpy() + (1 - share[:, :, None, None]) * plain[0].numpy()[::-1]
    np.testing.assert_allclose(mixed[0].numpy(), expected, atol=1e-2)
    val = [make_dataset(images, ages, genders, training=False, mixup=m, batch_size=16) for m in (0.0, 0.4)]
    np.testing.assert_array_equal(*(next(iter(v))[0].numpy() for v in val))
    with pytest.raises(ValueError, match="mixup_alpha"):
        make_dataset(images, ages, genders, training=True, mixup=-0.2, batch_size=16)


def test_per_target_weights_reach_their_own_loss_only():
    """A dict of weights keyed by target: zero weights silence the gender loss and leave the age loss."""
    keras = pytest.importorskip("keras")
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, {"gender_out": keras.layers.Dense(1, activation="sigmoid", name="gender_out")(flat),
                                 "age_out": keras.layers.Dense(1, name="age_out")(flat)})
    model.compile(loss={"gender_out": "binary_crossentropy", "age_out": "mae"})
    images = np.random.default_rng(1).integers(0, 255, (8, 8, 8, 1), dtype=np.uint8)
    ages, genders = np.arange(8) * 10, np.array([0, 1] * 4)
    weights = {"gender_out": np.zeros(8), "age_out": np.ones(8)}
    logs = model.evaluate(make_dataset(images, ages, genders, batch_size=8, training=True, sample_weights=weights),
                          verbose=0, return_dict=True)
    assert logs["gender_out_loss"] == 0.0 and logs["age_out_loss"] > 1.0


def test_per_target_weights_must_name_every_target():
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="age_dist"):
        make_dataset(images, np.arange(4), np.zeros(4), batch_size=4, training=True, age_distribution=True,
                     sample_weights={"gender_out": np.ones(4), "age_out": np.ones(4)})
