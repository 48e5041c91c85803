"""dlib's face-recognition network ported to Keras, and `agegender add-descriptor` that mixes it into AgeNet."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.cli import main  # noqa: E402
from agegender.config import TrainConfig  # noqa: E402
from agegender.models import MeanOfViews, MirrorViews, MixedGender  # noqa: E402
from agegender.models.backbones.face_recognition_net import (  # noqa: E402
    REFERENCE_FILENAME, assign_tfjs_weights, build_face_descriptor, build_face_recognition_net,
    default_weights_path, read_tfjs_weights)
from agegender.models.face_age import median_ages  # noqa: E402
from agegender.models.face_gender import MIX_WEIGHTS, choose_weight, fit_regression  # noqa: E402
from agegender.models.feature_heads import MIX_WEIGHTS as AGE_MIX_WEIGHTS  # noqa: E402
from agegender.serving.inference import predict_arrays  # noqa: E402
from agegender.serving.modelio import load_model  # noqa: E402
from agegender.training.loop import train  # noqa: E402
from agegender.training.teacher import logit  # noqa: E402

REFERENCE = default_weights_path().parents[1] / REFERENCE_FILENAME  # in models/pretrained/


def test_converted_network_gives_the_recorded_descriptors_and_matches_dlibs_own():
    reference = np.load(REFERENCE)
    descriptors = build_face_descriptor(128).predict(reference["faces"].astype("float32"), verbose=0)
    np.testing.assert_allclose(descriptors, reference["descriptors"], atol=1e-4)
    dlib = reference["dlib_descriptors"]  # dlib's own, on its landmark-aligned chips of the same faces
    cosine = np.sum(descriptors * dlib, 1) / (np.linalg.norm(descriptors, axis=1) * np.linalg.norm(dlib, axis=1))
    assert cosine.min() > 0.98
    # faces of different people are far apart, the same face is not: an identity descriptor, not noise
    assert np.linalg.norm(descriptors[0] - descriptors[1]) > 0.3


def _manifest(folder, weights, data: bytes):
    (folder / "w.bin").write_bytes(data)
    path = folder / "manifest.json"
    path.write_text(json.dumps([{"paths": ["w.bin"], "weights": weights}]))
    return path


def test_tfjs_weights_are_dequantized_in_order_and_a_short_shard_is_refused(tmp_path):
    weights = [{"name": "a", "shape": [2, 2], "dtype": "float32",
                "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
               {"name": "b", "shape": [3], "dtype": "float32"}]
    data = bytes([0, 1, 2, 4]) + np.array([1.5, -2.0, 3.0], dtype="<f4").tobytes()
    tensors = read_tfjs_weights(_manifest(tmp_path, weights, data))
    np.testing.assert_allclose(tensors["a"], [[-1.0, -0.5], [0.0, 1.0]])
    np.testing.assert_allclose(tensors["b"], [1.5, -2.0, 3.0])
    with pytest.raises(ValueError, match="describes 16 bytes, the shards hold 17"):
        read_tfjs_weights(_manifest(tmp_path, weights, data + b"\0"))


def test_every_tensor_of_the_port_is_used_once():
    net = build_face_recognition_net()
    tensors = {}
    for layer in net.layers:
        if isinstance(layer, keras.layers.Conv2D):
            prefix = layer.name if layer.name == "conv32_down" else layer.name.replace("_conv", "/conv")
            kernel, bias = layer.get_weights()
            tensors.update({f"{prefix}/conv/filters": kernel, f"{prefix}/conv/bias": bias,
                            f"{prefix}/scale/weights": np.full(bias.shape, 2.0, "float32"),
                            f"{prefix}/scale/biases": np.ones(bias.shape, "float32")})
    tensors["fc"] = net.get_layer("fc").get_weights()[0]
    assign_tfjs_weights(net, tensors)
    kernel, bias = net.get_layer("conv32_1_conv2").get_weights()  # the scale folded in: 2 x conv, 2 x bias + 1
    np.testing.assert_allclose(kernel, 2 * tensors["conv32_1/conv2/conv/filters"])
    np.testing.assert_allclose(bias, 2 * tensors["conv32_1/conv2/conv/bias"] + 1)
    with pytest.raises(ValueError, match="not used: \\['extra'\\]"):
        assign_tfjs_weights(net, {**tensors, "extra": np.zeros(1)})


def test_mirror_views_average_a_network_over_the_face_and_its_mirror():
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(1)
    net = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    outer = keras.Input((4, 4, 1))
    averaged = keras.Model(outer, MeanOfViews()(net(MirrorViews()(outer))))
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 1)).astype("float32")
    expected = (net.predict(x, verbose=0) + net.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(averaged.predict(x, verbose=0), expected, atol=1e-5)


def test_mixed_gender_is_agenets_at_weight_one_and_the_descriptors_at_zero():
    p, z = np.array([[0.2], [0.9]], "float32"), np.array([[3.0], [-1.0]], "float32")
    np.testing.assert_allclose(MixedGender(1.0)([p, z]), p, atol=1e-5)
    np.testing.assert_allclose(MixedGender(0.0)([p, z]), 1 / (1 + np.exp(-z)), atol=1e-5)
    half = MixedGender(0.5)([p, z])
    np.testing.assert_allclose(half, 1 / (1 + np.exp(-(0.5 * logit(p) + 0.5 * z))), atol=1e-5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        MixedGender(1.5)


def test_regression_is_one_linear_map_and_the_weight_is_chosen_by_accuracy_ties_to_agenet():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=5.0, scale=[1.0, 10.0], size=(400, 2))
    y = (x[:, 0] - 5.0 + (x[:, 1] - 5.0) / 10 > 0).astype(int)
    kernel, bias = fit_regression(x, y)
    assert np.mean((x @ kernel + bias > 0) == y) > 0.95
    p_agenet = np.where(y == 1, 0.6, 0.4)  # right on every face, with a small logit (0.41)
    sign = 2 * y - 1
    best, accuracy = choose_weight(p_agenet, -10.0 * sign, y)  # a confident descriptor that is always wrong
    assert best == 1.0 and accuracy["1.0"] == 100.0 and accuracy["0.9"] == accuracy["0.0"] == 0.0
    best, accuracy = choose_weight(p_agenet, 10.0 * sign, y)  # always right: every weight ties at 100 %
    assert set(accuracy.values()) == {100.0} and best == MIX_WEIGHTS[0] == 1.0
    best, accuracy = choose_weight(1 - p_agenet, 10.0 * sign, y)  # AgeNet always wrong, the descriptor right
    assert best == 0.9 and accuracy["1.0"] == 0.0 and accuracy["0.9"] == 100.0  # the largest weight that is right


@pytest.fixture(scope="module")
def base_model(tiny_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    config = TrainConfig(model="small_resnet", image_size=32, color_mode="rgb", epochs=1, batch_size=16, limit=32,
                         tta_flip=True, name="base", seed=1, model_kwargs={"widths": [8]})
    train(config, tiny_folder, models_dir=root / "models", runs_dir=root / "runs", verbose=0)
    return root / "models" / "base.keras"


def _test_faces(folder, card):
    from agegender.data import load_utkface
    from agegender.data.preprocess import load_split_arrays

    frame = load_utkface(folder)
    images, _, _ = load_split_arrays(frame[frame["split"] == "test"], card["input"]["image_size"], "rgb",
                                     resize=card["input"]["resize"], progress=False)
    return images


@pytest.mark.slow
def test_add_descriptor_without_age_head_keeps_agenets_ages_and_mixes_gender_chosen_on_val(base_model, tiny_folder,
                                                                                           tmp_path, capsys):
    code = main(["add-descriptor", str(base_model), "--name", "mixed", "--data", str(tiny_folder),
                 "--models-dir", str(tmp_path), "--no-age-head"])
    assert code == 0 and "mixed: base.keras + face descriptor" in capsys.readouterr().out
    model, card = load_model(tmp_path / "mixed.keras")
    base, base_card = load_model(base_model)
    assert card["tta_flip"] is False and card["architecture"].endswith("+face_descriptor")
    record = card["face_descriptor"]
    assert "age_head" not in record
    table = record["val_gender_accuracy_by_weight"]
    assert record["agenet_logit_weight"] == max(MIX_WEIGHTS, key=lambda a: table[f"{a:.1f}"])
    assert card["training"]["wall_seconds"] == pytest.approx(
        base_card["training"]["wall_seconds_all_stages"] + record["step_seconds"], abs=0.2)

    images = _test_faces(tiny_folder, card)
    mixed, alone = predict_arrays(model, images), predict_arrays(base, images, tta_flip=True)
    np.testing.assert_allclose(mixed["age"], alone["age"], atol=1e-4)  # AgeNet's mirror average, in the graph
    np.testing.assert_allclose(mixed["age_dist"], alone["age_dist"], atol=1e-6)
    assert card["metrics"]["test"]["age_mae"] == pytest.approx(base_card["metrics"]["test"]["age_mae"], abs=1e-4)


@pytest.mark.slow
def test_add_descriptor_mixes_the_age_heads_distribution_by_the_weight_chosen_on_val(base_model, tiny_folder,
                                                                                      tmp_path, capsys):
    assert main(["add-descriptor", str(base_model), "--name", "aged", "--data", str(tiny_folder),
                 "--models-dir", str(tmp_path)]) == 0
    assert "of AgeNet's age distribution" in capsys.readouterr().out
    model, card = load_model(tmp_path / "aged.keras")
    base, base_card = load_model(base_model)
    record = card["face_descriptor"]["age_head"]
    table = record["val_age_mae_by_weight"]
    assert record["features"] == 704 and record["heads"] == len(record["seeds"]) == 3
    assert record["agenet_dist_weight"] == min(AGE_MIX_WEIGHTS, key=lambda a: table[f"{a:.1f}"])
    # the built graph serves what the choice measured: its val MAE is the table's at the chosen weight
    assert card["metrics"]["val"]["age_mae"] == pytest.approx(table[f"{record['agenet_dist_weight']:.1f}"], abs=1e-3)
    assert table["1.0"] == pytest.approx(base_card["metrics"]["val"]["age_mae"], abs=1e-3)  # 1.0: AgeNet as served

    images = _test_faces(tiny_folder, card)
    served, alone = predict_arrays(model, images), predict_arrays(base, images, tta_flip=True)
    np.testing.assert_allclose(served["age_dist"].sum(1), 1.0, atol=1e-5)
    if record["agenet_dist_weight"] < 1.0:  # the age is the median of the mixed distribution
        np.testing.assert_allclose(served["age"], median_ages(served["age_dist"]), atol=1e-3)
        assert not np.allclose(served["age_dist"], alone["age_dist"], atol=1e-4)
    assert main(["add-descriptor", str(base_model), "--name", "gender_only", "--data", str(tiny_folder),
                 "--models-dir", str(tmp_path), "--no-age-head"]) == 0
    gender_only = predict_arrays(load_model(tmp_path / "gender_only.keras")[0], images)
    np.testing.assert_allclose(served["p_female"], gender_only["p_female"], atol=1e-6)  # the age head leaves gender alone


@pytest.mark.slow
def test_gender_heads_on_the_inner_features_mix_by_the_weight_chosen_on_val_and_leave_ages_alone(
        base_model, tiny_folder, tmp_path):
    out = ["--data", str(tiny_folder), "--models-dir", str(tmp_path)]
    assert main(["add-descriptor", str(base_model), "--name", "mlp", *out, "--gender-head", "mlp"]) == 0
    assert main(["add-descriptor", str(base_model), "--name", "linear", *out, "--gender-head", "regression"]) == 0
    model, card = load_model(tmp_path / "mlp.keras")
    record = card["face_descriptor"]
    assert "regression" not in record and record["gender_heads"]["features"] == "inner"
    table = record["val_gender_accuracy_by_weight"]
    chosen = record["agenet_logit_weight"]
    assert chosen == max(MIX_WEIGHTS, key=lambda a: table[f"{a:.1f}"])
    # the built graph serves what the choice measured
    assert 100 * card["metrics"]["val"]["gender_accuracy"] == pytest.approx(table[f"{chosen:.1f}"], abs=1e-3)
    images = _test_faces(tiny_folder, card)
    served = predict_arrays(model, images)
    linear = predict_arrays(load_model(tmp_path / "linear.keras")[0], images)
    np.testing.assert_allclose(served["age_dist"], linear["age_dist"], atol=1e-6)  # the same age heads
    assert not np.allclose(served["p_female"], linear["p_female"], atol=1e-4) or chosen == 1.0


@pytest.mark.slow
def test_gender_heads_learn_gender_from_features_that_carry_it_and_unknown_heads_are_refused(base_model, tmp_path):
    from agegender.models.add_descriptor import add_descriptor
    from agegender.models.face_gender import fit_gender_heads

    rng = np.random.default_rng(0)
    genders = rng.integers(0, 2, 1200)
    features = np.c_[genders + rng.normal(0, 0.4, len(genders)), rng.normal(0, 1, (len(genders), 5))] * 3 + 2
    logits = keras.ops.convert_to_numpy(fit_gender_heads(features[:1000], genders[:1000])(features[1000:]))
    assert np.mean((logits[:, 0] > 0) == genders[1000:]) > 0.85
    with pytest.raises(ValueError, match="unknown gender head"):
        add_descriptor(base_model, "x", models_dir=tmp_path, gender_head="forest")


@pytest.mark.slow
def test_without_the_mirror_view_agenet_sees_the_face_alone(base_model, tiny_folder, tmp_path):
    assert main(["add-descriptor", str(base_model), "--name", "plain", "--data", str(tiny_folder), "--models-dir",
                 str(tmp_path), "--no-mirror", "--no-age-head", "--gender-head", "regression"]) == 0
    model, card = load_model(tmp_path / "plain.keras")
    assert card["views_in_graph"] == "none" and card["tta_flip"] is False
    images = _test_faces(tiny_folder, card)
    served = predict_arrays(model, images)
    base = load_model(base_model)[0]
    np.testing.assert_allclose(served["age"], predict_arrays(base, images)["age"], atol=1e-4)
    assert not np.allclose(served["age"], predict_arrays(base, images, tta_flip=True)["age"], atol=1e-4)


def test_add_descriptor_refuses_what_it_cannot_mix(base_model, tiny_folder, tmp_path, capsys):
    out = ["--data", str(tiny_folder), "--models-dir", str(base_model.parent)]
    assert main(["add-descriptor", str(base_model), "--name", "base", *out]) == 2
    assert "the model it starts from" in capsys.readouterr().err
    assert main(["add-descriptor", str(base_model), "--name", "x", *out, "--weights", str(tmp_path / "no-manifest.json")]) == 2
    assert "make face-recognition-net" in capsys.readouterr().err
    for change, message in ((lambda data: data.update(fit_splits=["train", "val"]), "in-sample"),
                            (lambda data: data.update(fingerprint="0" * 16), "other data")):
        copy = tmp_path / "changed.keras"
        shutil.copy(base_model, copy)
        card = json.loads(base_model.with_suffix(".json").read_text())
        change(card["data"])
        copy.with_suffix(".json").write_text(json.dumps(card))
        assert main(["add-descriptor", str(copy), "--name", "x", "--data", str(tiny_folder),
                     "--models-dir", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_mixed_model_exports_and_serves_one_face(base_model, tiny_folder, tmp_path):
    from agegender.serving.export import export_with_test_images
    from agegender.serving.litert import TFLiteModel
    from agegender.serving.predict import Predictor

    assert main(["add-descriptor", str(base_model), "--name", "mixed", "--data", str(tiny_folder),
                 "--models-dir", str(tmp_path)]) == 0
    record = export_with_test_images(tmp_path / "mixed.keras", tiny_folder, check_images=8)
    assert record["check"]["max_p_female_diff"] < 0.01
    predictor = Predictor.load(tmp_path / "mixed.keras")
    assert isinstance(predictor.model, TFLiteModel) and predictor.views["tta_flip"] is False
    face = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3)).astype("uint8")
    (prediction,) = predictor.predict_crops(face)
    assert prediction.gender in ("male", "female") and 0.5 <= prediction.gender_probability <= 1.0


def test_inner_features_come_from_the_same_network_and_unknown_blocks_are_refused():
    from agegender.models.backbones.face_recognition_net import AGE_FEATURE_BLOCKS

    faces = np.load(REFERENCE)["faces"][:2].astype("float32")
    plain = build_face_descriptor(128)
    inner = build_face_descriptor(128, inner_blocks=AGE_FEATURE_BLOCKS)
    out = inner.predict(faces, verbose=0)
    assert out["inner"].shape == (2, 704)
    np.testing.assert_allclose(out["descriptor"], plain.predict(faces, verbose=0), atol=1e-5)
    assert (out["inner"] >= 0).all()  # means of ReLU outputs
    with pytest.raises(ValueError, match="no such blocks"):
        build_face_recognition_net(inner_blocks=("conv512_1",))
