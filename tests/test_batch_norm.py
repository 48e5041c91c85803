"""The fused batch normalization computes what ``keras.layers.BatchNormalization`` computes, only faster."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from agegender.models import build_small_resnet  # noqa: E402
from agegender.models.backbones.batch_norm import BatchNormalization  # noqa: E402
from agegender.models.backbones.efficientnet_lite import build_efficientnet_lite0  # noqa: E402

SETTINGS = dict(axis=-1, momentum=0.9, epsilon=1e-3)


def _pair(channels: int):
    """A Keras layer and a fused one with the same non-trivial weights and moving statistics."""
    rng = np.random.default_rng(0)
    keras_bn, fused_bn = keras.layers.BatchNormalization(**SETTINGS), BatchNormalization(**SETTINGS)
    for layer in (keras_bn, fused_bn):
        layer.build((None, 6, 5, channels))
    values = [rng.uniform(0.5, 2.0, channels), rng.normal(0, 1, channels), rng.normal(0, 1, channels),
              rng.uniform(0.5, 2.0, channels)]  # gamma, beta, moving mean, moving variance
    for layer in (keras_bn, fused_bn):
        layer.set_weights([v.astype("float32") for v in values])
    return keras_bn, fused_bn


def _step(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.range(1.0, 1.0 + y.shape[-1]) * y)  # weighs the channels differently
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y.numpy(), [g.numpy() for g in grads], [w.numpy() for w in layer.weights]


def test_training_step_matches_keras_outputs_gradients_and_moving_statistics():
    keras_bn, fused_bn = _pair(7)
    x = tf.constant(np.random.default_rng(1).normal(3.0, 2.0, (4, 6, 5, 7)).astype("float32"))
    (y_k, g_k, w_k), (y_f, g_f, w_f) = _step(keras_bn, x), _step(fused_bn, x)
    np.testing.assert_allclose(y_f, y_k, atol=1e-4)
    for grad_fused, grad_keras in zip(g_f, g_k):  # input, gamma, beta
        np.testing.assert_allclose(grad_fused, grad_keras, rtol=1e-4, atol=1e-3)
    # gamma, beta, moving mean, moving variance (the biased batch variance, as Keras keeps it)
    for weight_fused, weight_keras in zip(w_f, w_k):
        np.testing.assert_allclose(weight_fused, weight_keras, rtol=1e-5, atol=1e-5)
    assert not np.allclose(w_f[2], _pair(7)[1].moving_mean.numpy())  # the statistics did move


def test_inference_and_other_inputs_take_the_keras_path():
    keras_bn, fused_bn = _pair(3)
    x = np.random.default_rng(2).normal(0, 1, (2, 6, 5, 3)).astype("float32")
    np.testing.assert_allclose(fused_bn(x, training=False), keras_bn(x, training=False), atol=1e-6)
    flat_keras, flat_fused = keras.layers.BatchNormalization(), BatchNormalization()
    features = np.random.default_rng(3).normal(0, 1, (8, 3)).astype("float32")  # 2-D: not fusable
    np.testing.assert_allclose(flat_fused(features, training=True), flat_keras(features, training=True), atol=1e-5)
    assert not fused_bn._fusable(tf.constant(x), True, mask=tf.ones((2, 6, 5), bool))


def test_frozen_layer_uses_its_moving_statistics_in_training():
    _keras_bn, fused_bn = _pair(3)
    fused_bn.trainable = False
    before = fused_bn.moving_mean.numpy().copy()
    x = np.random.default_rng(4).normal(5, 1, (2, 6, 5, 3)).astype("float32")
    np.testing.assert_allclose(fused_bn(x, training=True), fused_bn(x, training=False), atol=1e-6)
    np.testing.assert_array_equal(fused_bn.moving_mean.numpy(), before)


def test_weight_files_are_interchangeable_with_keras_batch_normalization(tmp_path):
    """Keras names a layer's entry in a .weights.h5 file after its class: converted and saved weights still load."""
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3)(inputs)))
    plain.set_weights([np.random.default_rng(5).uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in plain.get_weights()])
    plain.save_weights(tmp_path / "plain.weights.h5")
    fused = keras.Model(inputs, BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3)(inputs)))
    fused.load_weights(tmp_path / "plain.weights.h5")
    for loaded, saved in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


@pytest.mark.slow
def test_models_use_it_and_round_trip_through_a_keras_file(tmp_path):
    backbone = build_efficientnet_lite0((32, 32, 3), weights=None, include_top=False)
    assert any(isinstance(layer, BatchNormalization) for layer in backbone.layers)
    model = build_small_resnet((32, 32, 3), widths=(8, 16))
    assert isinstance(model.get_layer("stem_bn"), BatchNormalization)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.get_layer("stem_bn")) is BatchNormalization
    x = np.random.default_rng(6).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["age_out"], model.predict(x, verbose=0)["age_out"],
                               atol=1e-5)


def test_builder_argument_chooses_fused_or_keras_layer_everywhere_in_the_backbone():
    def norm_classes(**kwargs) -> set[type]:
        backbone = build_efficientnet_lite0((32, 32, 3), weights=None, **kwargs)
        return {type(layer) for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}

    assert norm_classes() == {BatchNormalization}  # the default: every layer fused
    assert norm_classes(fused_batch_norm=False) == {keras.layers.BatchNormalization}  # before/after benchmarks
