"""Model builders: exact parameter counts, output names, the age-distribution head."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.models import (AGE_BINS, BUILDERS, VGG16_WEIGHTS_HELP, build_model, build_seed_cnn,  # noqa: E402
                              build_small_resnet, build_vgg16_transfer)


def _counts(model) -> tuple[int, int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return model.count_params(), trainable, frozen


def test_seed_cnn_parameters_and_outputs():
    model = build_seed_cnn()
    assert model.count_params() == 5_107_458
    assert model.input_shape == (None, 128, 128, 1)
    assert sorted(model.output_names) == ["age_out", "gender_out"]
    out = model(np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 1)).astype("float32"), training=False)
    assert set(out) == {"gender_out", "age_out"}
    p = keras.ops.convert_to_numpy(out["gender_out"])
    assert p.shape == (2, 1) and ((p >= 0) & (p <= 1)).all()
    assert keras.ops.convert_to_numpy(out["age_out"]).shape == (2, 1)


def test_build_model_by_name():
    model = build_model("seed_cnn", 64, 3)
    assert model.input_shape == (None, 64, 64, 3)
    assert set(BUILDERS) >= {"seed_cnn", "small_resnet", "vgg16_transfer", "agenet"}
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet9000", 64, 3)


def test_small_resnet_age_distribution():
    model = build_small_resnet(input_shape=(32, 32, 3), widths=(8, 16))
    assert sorted(model.output_names) == ["age_dist", "age_out", "gender_out"]
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    dist = out["age_dist"]
    assert dist.shape == (3, AGE_BINS) == (3, 117)
    assert (dist >= 0).all()
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-5)
    expected = (dist * np.arange(AGE_BINS)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["age_out"], expected, rtol=1e-4, atol=1e-3)
    assert out["gender_out"].shape == (3, 1)


def test_small_resnet_without_distribution():
    model = build_small_resnet(input_shape=(32, 32, 1), widths=(8,), age_distribution=False)
    assert sorted(model.output_names) == ["age_out", "gender_out"]


@pytest.fixture(scope="module")
def vgg_frozen():
    return build_vgg16_transfer(weights=None, fine_tune_block5=False)


def test_vgg16_frozen_base_counts(vgg_frozen):
    assert vgg_frozen.input_shape == (None, 200, 200, 3)
    assert _counts(vgg_frozen) == (34_148_546, 19_433_730, 14_714_816)
    assert sorted(vgg_frozen.output_names) == ["age_out", "gender_out"]


def test_vgg16_block5_unfrozen_counts():
    model = build_vgg16_transfer(weights=None, fine_tune_block5=True)
    assert _counts(model) == (34_148_546, 26_513_154, 7_635_392)
    trainable_base = {layer.name for layer in model.get_layer("vgg16").layers if layer.trainable and layer.weights}
    assert trainable_base == {"block5_conv1", "block5_conv2", "block5_conv3"}


def test_vgg16_missing_weights_file(tmp_path):
    missing = tmp_path / "vgg16_notop.h5"
    with pytest.raises(FileNotFoundError) as info:
        build_vgg16_transfer(weights=str(missing))
    text = str(info.value)
    assert str(missing) in text
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in text  # what to download
    assert "weights=PATH" in text and VGG16_WEIGHTS_HELP in text


def test_custom_layers_round_trip(tmp_path):
    """A distribution model saves and loads (ExpectedAge is registered) with identical outputs."""
    from agegender.serving.modelio import load_model, save_model_atomic

    model = build_small_resnet(input_shape=(32, 32, 3), widths=(8,))
    path = save_model_atomic(model, tmp_path / "m.keras", {"input": {"image_size": 32, "color_mode": "rgb"}})
    loaded, card = load_model(path)
    assert card["input"]["image_size"] == 32
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    a, b = model(x, training=False), loaded(x, training=False)
    for key in ("age_out", "gender_out", "age_dist"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a[key]), keras.ops.convert_to_numpy(b[key]), atol=1e-5)


def test_saved_models_are_deflated_with_the_same_weights(tmp_path):
    """save_model_atomic deflates the archive Keras writes uncompressed; Keras reads it back bit for bit."""
    import zipfile

    from agegender.serving.modelio import load_model, save_model_atomic

    model = build_small_resnet(input_shape=(32, 32, 3), widths=(8,))
    plain = tmp_path / "plain.keras"
    model.save(plain)
    path = save_model_atomic(model, tmp_path / "m.keras", {"input": {"image_size": 32, "color_mode": "rgb"}})
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(plain) as reference:
        assert {m.filename for m in archive.infolist()} == {m.filename for m in reference.infolist()}
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {m.compress_type for m in reference.infolist()} == {zipfile.ZIP_STORED}
    assert path.stat().st_size < plain.stat().st_size
    loaded, _ = load_model(path)
    for saved, original in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(saved.numpy(), original.numpy())
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def _median_by_hand(dist: np.ndarray) -> np.ndarray:
    """Median with each 1-year bin spread evenly over its year, by walking the bins."""
    out = []
    for p in dist:
        cumulative = 0.0
        for age, mass in enumerate(p):
            if cumulative + mass >= 0.5:
                out.append(max(0.0, age - 0.5 + (0.5 - cumulative) / mass))
                break
            cumulative += mass
    return np.array(out)


def test_median_readout_matches_the_definition_and_round_trips(tmp_path):
    from agegender.models import with_age_readout
    from agegender.serving.modelio import load_model, save_model_atomic

    model = build_small_resnet(input_shape=(32, 32, 3), widths=(8,))
    median_model = with_age_readout(model, "median")
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in median_model(x, training=False).items()}
    np.testing.assert_allclose(out["age_out"].ravel(), _median_by_hand(out["age_dist"]), atol=1e-3)
    expectation = keras.ops.convert_to_numpy(model(x, training=False)["age_out"]).ravel()
    assert np.allclose(expectation, out["age_dist"] @ np.arange(AGE_BINS), atol=1e-3)  # same weights, other read-out
    path = save_model_atomic(median_model, tmp_path / "median.keras", {"input": {"image_size": 32, "color_mode": "rgb"}})
    loaded, _ = load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)["age_out"]), out["age_out"], atol=1e-5)


def test_median_of_a_point_mass_and_of_a_baby():
    from agegender.models import MedianAge

    dist = np.zeros((2, AGE_BINS), dtype="float32")
    dist[0, 40] = 1.0                      # all mass on 40 -> the middle of its year
    dist[1, 0], dist[1, 1] = 0.9, 0.1      # mostly newborn -> stays at or above 0
    median = keras.ops.convert_to_numpy(MedianAge()(dist)).ravel()
    assert median[0] == pytest.approx(40.0, abs=1e-4)
    assert 0.0 <= median[1] < 0.5


def test_readout_errors():
    from agegender.models import with_age_readout

    with pytest.raises(ValueError, match="unknown age read-out"):
        with_age_readout(build_small_resnet(input_shape=(32, 32, 3), widths=(8,)), "mode")
    with pytest.raises(ValueError, match="no age distribution"):
        with_age_readout(build_seed_cnn(input_shape=(64, 64, 1)), "median")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["lite0", "lite1", "lite2"])
def test_agenet_backbone_variants_load_their_imagenet_weights(backbone):
    from agegender.models import build_agenet
    from agegender.models.backbones import build_efficientnet_lite, default_weights_path

    if not default_weights_path(backbone).is_file():
        pytest.skip(f"converted {backbone} weights absent; create them with `make pretrained`")
    model = build_agenet(input_shape=(64, 64, 3), backbone=backbone)
    assert sorted(model.output_names) == ["age_dist", "age_out", "gender_out"]
    inner = model.get_layer("backbone")
    reference = build_efficientnet_lite((64, 64, 3), weights="imagenet", pooling="avg", variant=backbone)
    for name in ("stem_conv", "block6d_project_conv", "top_bn"):
        for got, want in zip(inner.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    # Lite1 and Lite2 are one block deeper in stages 2-6; Lite2 is also wider (88 channels out of stage 4).
    assert ("block6e_project_conv" in {layer.name for layer in inner.layers}) == (backbone != "lite0")
    assert inner.get_layer("block4a_project_conv").filters == (88 if backbone == "lite2" else 80)


def test_agenet_unknown_backbone_is_refused():
    from agegender.models import build_agenet

    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        build_agenet(input_shape=(64, 64, 3), backbone="resnet50", backbone_weights=None)


def test_central_crop_keeps_the_middle_at_any_size():
    from agegender.models import CentralCrop

    crop = CentralCrop(0.8)
    image = np.arange(10 * 10 * 2, dtype="float32").reshape(1, 10, 10, 2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(crop(image)), image[:, 1:9, 1:9, :])
    assert crop.compute_output_shape((None, 160, 160, 3)) == (None, 128, 128, 3)
    assert crop.compute_output_shape((None, None, None, 3)) == (None, None, None, 3)
    flexible = keras.Sequential([keras.Input((None, None, 1)), CentralCrop(0.5)])  # side known only at run time
    for side in (8, 13):
        x = np.arange(side * side, dtype="float32").reshape(1, side, side, 1)
        kept, top = round(side * 0.5), (side - round(side * 0.5)) // 2
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(flexible(x)), x[:, top:top + kept, top:top + kept])
    assert np.array_equal(keras.ops.convert_to_numpy(CentralCrop(1.0)(image)), image)


@pytest.mark.parametrize("fraction", [0.0, -0.2, 1.5])
def test_central_crop_refuses_fractions_outside_0_1(fraction):
    from agegender.models import CentralCrop, build_agenet

    with pytest.raises(ValueError, match="crop_fraction"):
        CentralCrop(fraction)
    with pytest.raises(ValueError, match="crop_fraction"):
        build_agenet(input_shape=(40, 40, 3), backbone_weights=None, crop_fraction=fraction)


@pytest.mark.slow
def test_agenet_crop_fraction_feeds_the_backbone_the_centre(tmp_path):
    """The backbone sees exactly the central crop, and the model saves and loads with it."""
    from agegender.models import build_agenet
    from agegender.serving.modelio import load_model, save_model_atomic

    model = build_agenet(input_shape=(40, 40, 3), backbone_weights=None, crop_fraction=0.8)
    assert model.input_shape == (None, 40, 40, 3)
    assert model.get_layer("backbone").input_shape == (None, 32, 32, 3)
    x = np.random.default_rng(3).uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    features = keras.Model(model.input, model.get_layer("feature_dropout").input)  # the backbone's output here
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features(x, training=False)),
                               keras.ops.convert_to_numpy(model.get_layer("backbone")(x[:, 4:36, 4:36], training=False)),
                               atol=1e-5)
    path = save_model_atomic(model, tmp_path / "m.keras", {"input": {"image_size": 40, "color_mode": "rgb"}})
    loaded, _ = load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)["age_out"]),
                               keras.ops.convert_to_numpy(model(x, training=False)["age_out"]), atol=1e-4)
    flexible = build_agenet(input_shape=(None, None, 3), backbone_weights=None, crop_fraction=0.8)
    assert keras.ops.convert_to_numpy(flexible(x[:, :35, :35], training=False)["gender_out"]).shape == (2, 1)
