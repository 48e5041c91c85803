"""EfficientNet-Lite0 backbone: architecture, converted ImageNet weights vs the PyTorch reference.

The weights and the reference logits come from ``make pretrained``
(``scripts/convert_efficientnet_lite0.py``); tests that need them skip when they are absent.
No torch needed here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.backbones import build_efficientnet_lite0, default_weights_path  # noqa: E402
from agegender.backbones import efficientnet_lite as el  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "models" / "pretrained" / "efficientnet_lite0_imagenet.weights.h5"
REFERENCE = REPO / "models" / "pretrained" / "efficientnet_lite0_reference.npz"
SIZES = (224, 128, 112)
#: Measured at conversion: ~2e-5 (TF 2.21 / Keras 3.15 vs torch 2.13, CPU). Margin for other CPUs.
ATOL = 1e-3

#: ``sum(p.numel() for p in EfficientNet.from_name("efficientnet-lite0").parameters())``
TORCH_NUM_PARAMS = 4_652_008
#: BatchNorm running_mean + running_var values (Keras counts them as non-trainable weights).
TORCH_NUM_BN_BUFFERS = 42_016

needs_weights = pytest.mark.skipif(
    not (WEIGHTS.is_file() and REFERENCE.is_file()),
    reason=f"converted weights absent ({WEIGHTS.relative_to(REPO)}); create them with `make pretrained`",
)


def _count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture(scope="module")
def reference():
    data = np.load(REFERENCE)
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def pretrained_full():
    return build_efficientnet_lite0((None, None, 3), include_top=True, weights=WEIGHTS)


def test_param_count_matches_torch():
    model = build_efficientnet_lite0(include_top=True)
    assert _count(model.trainable_weights) == TORCH_NUM_PARAMS == el.NUM_PARAMS_TRAINABLE
    assert _count(model.non_trainable_weights) == TORCH_NUM_BN_BUFFERS
    assert model.count_params() == TORCH_NUM_PARAMS + TORCH_NUM_BN_BUFFERS == el.NUM_PARAMS_TOTAL
    assert model.output_shape == (None, 1000)


def test_layer_names_are_stable():
    model = build_efficientnet_lite0(include_top=True)
    names = {layer.name for layer in model.layers}
    expected = {
        "input_normalization", "stem_conv", "stem_bn", "stem_activation",
        "block1a_dwconv", "block1a_project_conv", "block2a_expand_conv", "block3b_dwconv",
        "block3b_add", "block6d_project_bn", "block7a_project_bn",
        "top_conv", "top_bn", "top_activation", "avg_pool", "predictions",
    }  # fmt: skip
    assert expected <= names
    assert len(el.block_names()) == 16


def test_normalisation_is_inside_the_model():
    layer = build_efficientnet_lite0((32, 32, 3)).get_layer("input_normalization")
    x = np.array([[[[0.0, 127.0, 255.0]]]], dtype=np.float32)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y.ravel(), [-127 / 128, 0.0, 128 / 128], atol=1e-6)


@pytest.mark.parametrize("size, grid", [(96, 3), (112, 4), (128, 4)])
def test_any_input_size(size, grid):
    model = build_efficientnet_lite0((size, size, 3))
    assert model.output_shape == (None, grid, grid, 1280)
    pooled = build_efficientnet_lite0((size, size, 3), pooling="avg")
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    y = np.asarray(pooled(x, training=False))
    assert y.shape == (2, 1280) and np.isfinite(y).all()


def test_missing_weights_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make pretrained"):
        build_efficientnet_lite0(weights=tmp_path / "nope.weights.h5")
    with pytest.raises(FileNotFoundError, match="make pretrained"):
        build_efficientnet_lite0(include_top=True, weights=str(tmp_path / "nope.weights.h5"))


def test_default_weights_path_points_at_models_pretrained():
    assert default_weights_path() == WEIGHTS or "AGEGENDER_PRETRAINED_DIR" in os.environ


@needs_weights
def test_reference_metadata(reference):
    meta = json.loads(str(reference["meta"]))
    assert meta["torch_num_params"] == TORCH_NUM_PARAMS
    assert meta["torch_num_bn_buffers"] == TORCH_NUM_BN_BUFFERS
    assert tuple(meta["mean_rgb"]) == el.MEAN_RGB and tuple(meta["std_rgb"]) == el.STD_RGB
    assert meta["max_abs_diff_logits"] < ATOL


@needs_weights
@pytest.mark.parametrize("size", SIZES)
def test_logits_match_torch(pretrained_full, reference, size):
    images = reference[f"images_{size}"].astype(np.float32)
    logits = np.asarray(pretrained_full(images, training=False))
    expected = reference[f"logits_{size}"]
    assert logits.shape == expected.shape == (len(images), 1000)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


@needs_weights
def test_top1_on_real_image_matches_torch(reference):
    model = build_efficientnet_lite0((224, 224, 3), include_top=True, weights=WEIGHTS)
    real = reference["images_224"][:1].astype(np.float32)  # index 0: the real photo
    logits = np.asarray(model.predict(real, verbose=0))
    assert int(logits.argmax()) == int(reference["logits_224"][0].argmax())
    # Not a degenerate prediction: the top-5 classes agree too (as a set).
    assert set(np.argsort(-logits[0])[:5]) == set(np.argsort(-reference["logits_224"][0])[:5])


@needs_weights
@pytest.mark.parametrize("pooling", [None, "avg"])
def test_headless_loads_with_top_weights(pretrained_full, reference, pooling):
    model = build_efficientnet_lite0((128, 128, 3), include_top=False, weights=WEIGHTS, pooling=pooling)
    assert "predictions" not in {layer.name for layer in model.layers}
    for name in ("stem_conv", "block4b_dwconv", "top_bn"):
        for got, want in zip(model.get_layer(name).get_weights(), pretrained_full.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    images = reference["images_128"].astype(np.float32)
    tap = "avg_pool" if pooling == "avg" else "top_activation"
    features = keras.Model(pretrained_full.input, pretrained_full.get_layer(tap).output)
    np.testing.assert_allclose(
        np.asarray(model(images, training=False)), np.asarray(features(images, training=False)), atol=1e-5
    )


@needs_weights
def test_pretrained_works_at_96(reference):
    model = build_efficientnet_lite0((96, 96, 3), include_top=True, weights=WEIGHTS)
    x = reference["images_128"][:, 16:112, 16:112].astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 1000) and np.isfinite(y).all()
