"""tf.data input pipelines: uint8 arrays in memory -> shuffled, augmented float batches."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .models import AGE_BINS

AGE_SIGMA = 2.0  # width (years) of the soft age label for distribution heads


def soft_age_labels(ages: tf.Tensor, sigma: float = AGE_SIGMA) -> tf.Tensor:
    """Gaussian label distribution over 0..MAX_AGE centred on each true age."""
    bins = tf.range(AGE_BINS, dtype=tf.float32)
    ages = tf.cast(tf.reshape(ages, (-1, 1)), tf.float32)
    weights = tf.exp(-0.5 * tf.square((bins - ages) / sigma))
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip, shift/zoom (one crop_and_resize), brightness and contrast, on a float 0..255 batch."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    seeds = tf.random.experimental.stateless_split(seed, 6)
    flip = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[0]) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    scale = tf.random.stateless_uniform((batch, 1), seeds[1], 0.88, 1.08)
    centre = 0.5 + tf.random.stateless_uniform((batch, 2), seeds[2], -0.06, 0.06)
    boxes = tf.concat([centre - scale / 2, centre + scale / 2], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size, extrapolation_value=0.0)
    brightness = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[3], -25.0, 25.0)
    contrast = tf.random.stateless_uniform((batch, 1, 1, 1), seeds[4], 0.75, 1.25)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * contrast + mean + brightness
    return tf.clip_by_value(images, 0.0, 255.0)


def make_dataset(images: np.ndarray, ages: np.ndarray, genders: np.ndarray, *, batch_size: int,
                 training: bool, augment: bool = False, seed: int = 42, age_distribution: bool = False) -> tf.data.Dataset:
    """Batches of ``(float32 images, {"gender_out", "age_out"[, "age_dist"]})``.

    Shuffling and augmentation are seeded per epoch, so a run is repeatable.
    """
    targets = {"gender_out": genders.astype("float32").reshape(-1, 1),
               "age_out": ages.astype("float32").reshape(-1, 1)}
    ds = tf.data.Dataset.from_tensor_slices((images, targets))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)

    def to_float(x, y):
        return tf.cast(x, tf.float32), y

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment:
        counter = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda xy, s: (augment_batch(xy[0], tf.cast(s, tf.int32) % 2**30), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    if age_distribution:
        ds = ds.map(lambda x, y: (x, {**y, "age_dist": soft_age_labels(y["age_out"])}),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
