"""tf.data input pipelines: uint8 arrays in memory -> shuffled, augmented float batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from ..models.builders import AGE_BINS

AGE_SIGMA = 2.0  # width (years) of the soft age label for distribution heads


def soft_age_labels(ages: tf.Tensor, sigma: float = AGE_SIGMA, sigma_per_year: float = 0.0) -> tf.Tensor:
    """Gaussian label distribution over 0..MAX_AGE centred on each true age.

    The width is ``sigma + sigma_per_year * age``: a fixed 2-year width cut off at 0 puts the
    mean of a one-year-old's label near 1.8 years, and ages are less certain as people get older.
    """
    bins = tf.range(AGE_BINS, dtype=tf.float32)
    ages = tf.cast(tf.reshape(ages, (-1, 1)), tf.float32)
    width = sigma + sigma_per_year * ages
    weights = tf.exp(-0.5 * tf.square((bins - ages) / width))
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


OLDEST_BIN_START = 90  # age_balance_weights: with year bins, everyone from 90 up is one group


def age_balance_weights(ages: np.ndarray, power: float, bin_years: int = 0) -> np.ndarray:
    """Per-image weights ``(share of the image's age group) ** -power``, scaled to mean 1.

    ``power=0.5`` gives rare groups (children, teenagers, the old) more say without the noise of
    full inverse-frequency weights. The groups are the five bands of the evaluation report, or with
    ``bin_years`` > 0 bins of that many years (0-9, 10-19, ..., 90+ with 10), which also lift the
    rarer old ages inside the wide 60+ band; ages from 90 up share one bin (a few dozen faces, too few
    and too noisy to weight one by one).
    """
    from ..evaluation.metrics import age_band

    groups = pd.Series(np.minimum(np.asarray(ages), OLDEST_BIN_START) // bin_years if bin_years else age_band(ages))
    share = groups.map(groups.value_counts(normalize=True)).to_numpy(dtype="float64")
    weights = share ** -power
    return (weights / weights.mean()).astype("float32")


#: low-resolution augmentation: the fraction of the input's side length an image is reduced to, drawn uniformly
LOW_RESOLUTION_RANGE = (0.2, 0.8)


def degrade_resolution(images: tf.Tensor, seed: tf.Tensor, probability: float,
                       keep: tuple[float, float] = LOW_RESOLUTION_RANGE) -> tf.Tensor:
    """Each image, with ``probability``, shrunk (area average) and enlarged back (bilinear): a blurred, low-detail face.

    UTKFace's crops come from photos of every quality, and webcams and group photos give small faces; a model
    that saw only sharp faces reads a blurred adult as a child. The reduced size (``keep`` times the side) is drawn once per
    batch, so one resize serves the whole batch; which images get it is drawn per image.
    """
    batch, size = tf.shape(images)[0], tf.shape(images)[1:3]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    fraction = tf.random.stateless_uniform((), seeds[0], *keep)
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * fraction), tf.int32), 1)
    degraded = tf.image.resize(tf.image.resize(images, small, method="area"), size, method="bilinear")
    chosen = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[1]) < probability
    return tf.where(chosen, degraded, images)


#: random erasing: the share of the image's area one erased rectangle covers, and its height/width ratio (log-uniform)
ERASE_AREA_RANGE = (0.02, 0.25)
ERASE_ASPECT_RANGE = (0.3, 3.3)


def erase_rectangles(images: tf.Tensor, seed: tf.Tensor, probability: float,
                     area: tuple[float, float] = ERASE_AREA_RANGE,
                     aspect: tuple[float, float] = ERASE_ASPECT_RANGE) -> tf.Tensor:
    """Each image, with ``probability``, gets one rectangle replaced by uniform noise (random erasing, Zhong et al. 2017).

    A hand, a microphone or sunglasses hide part of many real faces; a model that has learnt to read age and
    gender from what is left of a face should lean less on any one region. Size, shape and place are drawn
    per image; the rectangle always lies inside the image.
    """
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    share = tf.random.stateless_uniform((batch,), seeds[0], *area)
    ratio = tf.exp(tf.random.stateless_uniform((batch,), seeds[1], *np.log(aspect).tolist()))
    pixels = share * tf.cast(height * width, tf.float32)
    rows = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(pixels * ratio)), tf.int32), 1, height)
    cols = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(pixels / ratio)), tf.int32), 1, width)
    top = tf.cast(tf.floor(tf.random.stateless_uniform((batch,), seeds[2]) * tf.cast(height - rows + 1, tf.float32)),
                  tf.int32)
    left = tf.cast(tf.floor(tf.random.stateless_uniform((batch,), seeds[3]) * tf.cast(width - cols + 1, tf.float32)),
                   tf.int32)
    y = tf.range(height)[None, :, None]
    x = tf.range(width)[None, None, :]
    inside = ((y >= top[:, None, None]) & (y < (top + rows)[:, None, None])
              & (x >= left[:, None, None]) & (x < (left + cols)[:, None, None]))
    chosen = tf.random.stateless_uniform((batch, 1, 1), seeds[4]) < probability
    noise = tf.random.stateless_uniform(tf.shape(images), seeds[5], 0.0, 255.0, dtype=images.dtype)
    return tf.where((inside & chosen)[..., None], noise, images)


#: photo-domain augmentation: ranges of the per-image draws (see :func:`photo_capture`)
PHOTO_SATURATION_RANGE = (0.4, 1.6)   # 0 = gray, 1 = unchanged
PHOTO_CHANNEL_GAIN_RANGE = (0.88, 1.12)  # a colour cast: each channel scaled on its own
PHOTO_GAMMA_RANGE = (0.7, 1.5)
PHOTO_GRAY_SHARE = 0.25  # of the chosen images, this share become grayscale
PHOTO_NOISE_MAX = 10.0  # grain: Gaussian noise with a standard deviation up to this many levels of 255


def photo_capture(images: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """Each image, with ``probability``, re-captured: saturation, a colour cast, gamma, sometimes grayscale, grain.

    UTKFace's crops are web photos; people's own photos are scanned prints, phone shots, old film with faded or
    orange colours and grain. A model that has only seen UTKFace's look reads such texture and colour as age
    (FG-NET: ages over-estimated by 4 years). Every draw is per image; images are float 0..255.
    """
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 7)

    def draw(k, low, high, shape=(1, 1, 1)):
        return tf.random.stateless_uniform((batch, *shape), seeds[k], low, high)

    gray = tf.reduce_mean(images * tf.constant([0.299, 0.587, 0.114]) * 3.0, axis=-1, keepdims=True)
    out = gray + (images - gray) * draw(0, *PHOTO_SATURATION_RANGE)
    out = out * draw(1, *PHOTO_CHANNEL_GAIN_RANGE, shape=(1, 1, 3))
    out = 255.0 * tf.pow(tf.clip_by_value(out, 0.0, 255.0) / 255.0, draw(2, *PHOTO_GAMMA_RANGE))
    to_gray = draw(3, 0.0, 1.0) < PHOTO_GRAY_SHARE
    out_gray = tf.reduce_mean(out * tf.constant([0.299, 0.587, 0.114]) * 3.0, axis=-1, keepdims=True)
    out = tf.where(to_gray, tf.broadcast_to(out_gray, tf.shape(out)), out)
    noise = tf.random.stateless_normal(tf.shape(images), seeds[4]) * draw(5, 0.0, PHOTO_NOISE_MAX)
    out = tf.clip_by_value(out + noise, 0.0, 255.0)
    chosen = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[6]) < probability
    return tf.where(chosen, out, images)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, low_resolution: float = 0.0, erase: float = 0.0,
                  photo: float = 0.0, low_resolution_keep: tuple[float, float] = LOW_RESOLUTION_RANGE) -> tf.Tensor:
    """Flip, shift/zoom (one crop_and_resize), optionally low resolution, brightness and contrast, optionally erasing.

    Images are float 0..255. ``low_resolution`` is the probability of :func:`degrade_resolution` per image and
    ``erase`` that of :func:`erase_rectangles` (``low_resolution_keep``: the range of the reduced side), ``photo`` that of :func:`photo_capture`; at 0 the draws of the other augmentations are exactly those of the
    recipes trained before the options existed (erasing draws from its own seed, folded out of ``seed``).
    """
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    flip = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[0]) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    scale = tf.random.stateless_uniform((batch, 1), seeds[1], 0.88, 1.08)
    centre = 0.5 + tf.random.stateless_uniform((batch, 2), seeds[2], -0.06, 0.06)
    boxes = tf.concat([centre - scale / 2, centre + scale / 2], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size, extrapolation_value=0.0)
    if low_resolution:
        images = degrade_resolution(images, seeds[5], low_resolution, tuple(low_resolution_keep))
    if photo:
        images = photo_capture(images, tf.random.experimental.stateless_fold_in(seed, 7), photo)
    brightness = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[3], -25.0, 25.0)
    contrast = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[4], 0.75, 1.25)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 255.0)
    if erase:
        images = erase_rectangles(images, tf.random.experimental.stateless_fold_in(seed, 6), erase)
    return images


def mix_batch(images: tf.Tensor, targets: dict[str, tf.Tensor], weights, seed: tf.Tensor, alpha: float):
    """mixup (Zhang et al. 2018): each image blended with its partner, the image at the mirrored place in the batch.

    The share of an image's own pixels is drawn per image from Beta(alpha, alpha); every target (soft age labels,
    age, gender, teacher outputs) and the loss weights are blended with the same share, so a 30/70 mix of a
    20-year-old woman and a 60-year-old man is taught as 48 years old and 30 % female. Batches are shuffled, so the
    mirrored partner is a random one. With a small alpha most shares lie near 0 or 1: mostly one face, a little
    of another. ``weights`` is None, one array, or a dict of arrays keyed like ``targets``.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    batch = tf.shape(images)[0]
    own = tf.random.stateless_gamma((batch,), seeds[0], alpha)
    other = tf.random.stateless_gamma((batch,), seeds[1], alpha)
    total = own + other
    # both draws can underflow to 0 at a small alpha; an even mix then, never 0/0
    share = tf.where(total > 0, own / tf.maximum(total, 1e-30), 0.5)

    def blend(values: tf.Tensor) -> tf.Tensor:
        values = tf.convert_to_tensor(values)
        lam = tf.reshape(tf.cast(share, values.dtype), tf.concat([[batch], tf.ones(tf.rank(values) - 1, tf.int32)], 0))
        return lam * values + (1.0 - lam) * tf.reverse(values, axis=[0])

    mixed = (blend(images), {name: blend(values) for name, values in targets.items()})
    if weights is None:
        return mixed
    return (*mixed, {name: blend(w) for name, w in weights.items()} if isinstance(weights, dict) else blend(weights))


def make_dataset(images: np.ndarray, ages: np.ndarray, genders: np.ndarray, *, batch_size: int,
                 training: bool, augment: bool = False, seed: int = 42, age_distribution: bool = False,
                 age_sigma: float = AGE_SIGMA, age_sigma_per_year: float = 0.0,
                 sample_weights: np.ndarray | dict[str, np.ndarray] | None = None,
                 extra_targets: dict[str, np.ndarray] | None = None,
                 low_resolution: float = 0.0, erase: float = 0.0, photo: float = 0.0, mixup: float = 0.0,
                 image_size: int | None = None,
                 low_resolution_keep: tuple[float, float] = LOW_RESOLUTION_RANGE) -> tf.data.Dataset:
    """Batches of ``(float32 images, {"gender_out", "age_out"[, "age_dist"], *extra_targets}[, weights])``.

    ``sample_weights`` is one weight per image for every loss, or a dict of them keyed by target name
    (every target, ``age_dist`` included) when the heads weight the images differently.

    Shuffling and augmentation are seeded per epoch, so a run is repeatable. ``image_size`` shrinks the
    images to that side (area averaging, before augmentation): the early epochs of progressive resizing.
    ``mixup`` > 0 blends the training batches after augmentation (:func:`mix_batch`, Beta(mixup, mixup)).
    """
    if mixup < 0:
        raise ValueError(f"mixup_alpha is 0 (off) or the positive alpha of Beta(alpha, alpha), not {mixup}")
    if not 0.0 < low_resolution_keep[0] <= low_resolution_keep[1] <= 1.0:
        raise ValueError(f"low_resolution_keep is a range of side shares within (0, 1], not {list(low_resolution_keep)}")
    for setting, probability in (("augment_low_resolution", low_resolution), ("augment_erase", erase),
                                 ("augment_photo", photo)):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"{setting} is a probability between 0 and 1, not {probability}")
    targets = {"gender_out": genders.astype("float32").reshape(-1, 1),
               "age_out": ages.astype("float32").reshape(-1, 1),
               **{name: values.astype("float32") for name, values in (extra_targets or {}).items()}}
    if isinstance(sample_weights, dict):
        expected = set(targets) | ({"age_dist"} if age_distribution else set())
        if set(sample_weights) != expected:
            raise ValueError(f"per-target sample weights must name exactly the targets {sorted(expected)}, "
                             f"not {sorted(sample_weights)}")
        sample_weights = {name: weights.astype("float32") for name, weights in sample_weights.items()}
    elif sample_weights is not None:
        sample_weights = sample_weights.astype("float32")
    columns = (images, targets) if sample_weights is None else (images, targets, sample_weights)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def to_float(x, *rest):
        x = tf.cast(x, tf.float32)
        if image_size and image_size != images.shape[1]:
            x = tf.image.resize(x, (image_size, image_size), method="area")
        return (x, *rest)

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment:
        counter = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda batch, s: (augment_batch(batch[0], tf.cast(s, tf.int32) % 2**30, low_resolution, erase, photo,
                                                low_resolution_keep), *batch[1:]),
            num_parallel_calls=tf.data.AUTOTUNE)
    if age_distribution:
        def add_soft_labels(x, y, *rest):
            return (x, {**y, "age_dist": soft_age_labels(y["age_out"], age_sigma, age_sigma_per_year)}, *rest)

        ds = ds.map(add_soft_labels, num_parallel_calls=tf.data.AUTOTUNE)
    if training and mixup:
        # a stream of its own, so the shuffle and augmentation draws stay those of a run without mixup
        mix_seeds = tf.data.Dataset.random(seed=seed + 7_919).batch(2)
        ds = tf.data.Dataset.zip((ds, mix_seeds)).map(
            lambda batch, s: mix_batch(batch[0], batch[1], batch[2] if len(batch) > 2 else None,
                                       tf.cast(s, tf.int32) % 2**30, mixup),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
