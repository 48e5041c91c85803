"""The TFLite export: same predictions as the Keras model, used for serving only when it matches."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from agegender.cli import main as cli_main
from agegender.data.images import load_for_model
from agegender.evaluation.metrics import compare_models, evaluate_folder
from agegender.serving.export import _refusal, export_tflite, prediction_differences
from agegender.serving.inference import predict_arrays
from agegender.serving.litert import TFLiteModel
from agegender.serving.modelio import ModelFileError, file_sha256, load_model, load_serving_model
from agegender.serving.predict import Predictor


def _copy_model(tiny_model, folder):
    target = folder / "tiny.keras"
    shutil.copy(tiny_model.path, target)
    shutil.copy(tiny_model.path.with_suffix(".json"), target.with_suffix(".json"))
    return target


def _inputs(tiny_model, n=12):
    paths = sorted(tiny_model.folder.glob("*.jpg"))[:n]
    spec = tiny_model.card["input"]
    return np.stack([load_for_model(p, spec["image_size"], spec["color_mode"], spec["resize"]) for p in paths])


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    path = _copy_model(tiny_model, tmp_path_factory.mktemp("export"))
    assert cli_main(["export", "--model", str(path), "--data", str(tiny_model.folder), "--check-images", "8"]) == 0
    return path


@pytest.mark.slow
def test_export_is_recorded_and_matches(exported, tiny_model):
    record = json.loads(exported.with_suffix(".json").read_text())["tflite"]
    lite = exported.with_suffix(".tflite")
    assert record["file"] == lite.name and record["bytes"] == lite.stat().st_size
    assert record["source_sha256"] == file_sha256(exported) and record["quantization"] == "float16"
    assert record["sha256"] == file_sha256(lite)
    assert record["check"]["images"] == 8 and record["check"]["gender_agreement"] == 1.0
    images = _inputs(tiny_model)
    keras_out = predict_arrays(load_model(exported)[0], images)
    lite_out = predict_arrays(TFLiteModel(lite), images)
    np.testing.assert_allclose(lite_out["age"], keras_out["age"], atol=0.5)
    np.testing.assert_allclose(lite_out["p_female"], keras_out["p_female"], atol=0.02)
    # any batch size, one after another (the interpreter is resized)
    np.testing.assert_allclose(predict_arrays(TFLiteModel(lite), images[:1])["age"], lite_out["age"][:1], atol=1e-4)


def test_serving_prefers_a_matching_export(exported, tiny_model):
    model, card = load_serving_model(exported)
    assert isinstance(model, TFLiteModel) and card["name"] == tiny_model.card["name"]
    assert not isinstance(load_serving_model(exported, prefer_tflite=False)[0], TFLiteModel)
    predictor = Predictor.load(exported)
    assert isinstance(predictor.model, TFLiteModel)
    face = _inputs(tiny_model, 1)
    keras_pred = Predictor(load_model(exported)[0], card).predict_crops(face)[0]
    lite_pred = predictor.predict_crops(face)[0]
    assert lite_pred.age == pytest.approx(keras_pred.age, abs=0.5) and lite_pred.gender == keras_pred.gender


def test_evaluate_the_export(exported, tiny_model):
    keras_metrics = evaluate_folder(tiny_model.folder, exported)
    lite_metrics = evaluate_folder(tiny_model.folder, exported.with_suffix(".tflite"))
    assert lite_metrics["n"] == keras_metrics["n"] > 0
    assert lite_metrics["age_mae"] == pytest.approx(keras_metrics["age_mae"], abs=0.1)
    table = compare_models([exported, exported.with_suffix(".tflite")], tiny_model.folder)
    assert list(table.index) == ["tiny", "tiny (TFLite float16 export)"]
    assert table["file MB"].iloc[1] < table["file MB"].iloc[0]
    assert table["SE test age MAE"].iloc[0] == pytest.approx(keras_metrics["age_mae_se"], abs=0.01)
    assert keras_metrics["age_mae_se"] > 0


def test_stale_or_damaged_export_is_not_served(exported, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for suffix in (".keras", ".json", ".tflite"):
        shutil.copy(exported.with_suffix(suffix), folder / f"tiny{suffix}")
    path = folder / "tiny.keras"
    assert isinstance(load_serving_model(path)[0], TFLiteModel)
    (folder / "tiny.tflite").write_bytes(b"not a flatbuffer" * 10)
    assert not isinstance(load_serving_model(path)[0], TFLiteModel)  # damaged: Keras serves
    with pytest.raises(ModelFileError, match="damaged"):
        load_serving_model(folder / "tiny.tflite")
    good = exported.with_suffix(".tflite").read_bytes()
    middle = len(good) // 2
    # A truncated or altered flatbuffer can crash TFLite's interpreter outright (a truncated one does, measured
    # with TensorFlow 2.20), so it must be caught against the card before an interpreter opens it.
    for damaged, reason in ((good[:middle], "bytes where its card records"),
                            (good[:middle] + bytes(b ^ 0xFF for b in good[middle:middle + 64]) + good[middle + 64:],
                             "SHA-256")):
        (folder / "tiny.tflite").write_bytes(damaged)
        assert not isinstance(load_serving_model(path)[0], TFLiteModel)
        with pytest.raises(ModelFileError, match=reason):
            load_serving_model(folder / "tiny.tflite")
    shutil.copy(exported.with_suffix(".tflite"), folder / "tiny.tflite")
    assert isinstance(load_serving_model(folder / "tiny.tflite")[0], TFLiteModel)
    model, _ = load_model(path)
    model.save(path)  # retrained (different bytes): the export no longer matches
    assert not isinstance(load_serving_model(path)[0], TFLiteModel)
    with pytest.raises(ModelFileError, match="not found"):
        load_serving_model(folder / "other.tflite")


@pytest.mark.slow
def test_export_refused_when_it_differs(tiny_model, tmp_path, monkeypatch):
    import agegender.serving.export as export

    path = _copy_model(tiny_model, tmp_path)
    card_before = path.with_suffix(".json").read_text()
    for limit in ("MEAN_AGE_DIFF", "MAX_AGE_DIFF", "MAX_PROB_DIFF"):  # seed_cnn: no distribution
        with monkeypatch.context() as mp:
            mp.setattr(export, limit, -1.0)
            with pytest.raises(RuntimeError, match="differs"):
                export_tflite(path, _inputs(tiny_model, 4))
    assert not path.with_suffix(".tflite").exists() and not list(tmp_path.glob(".*.tflite"))
    assert path.with_suffix(".json").read_text() == card_before
    with pytest.raises(ValueError, match="check images"):
        export_tflite(path, np.zeros((0, 64, 64, 1), np.uint8))


def _outputs(ages, p_female, dists=None):
    out = {"age": np.asarray(ages, "float32"), "p_female": np.asarray(p_female, "float32")}
    if dists is not None:
        out["age_dist"] = np.asarray(dists, "float32")
    return out


def test_export_check_of_distributions_does_not_depend_on_their_flatness():
    """A median read-out of a flat distribution jumps with tiny changes; its total variation does not."""
    flat = np.full((2, 117), 1 / 117)
    nudged = flat.copy()
    nudged[0, 57], nudged[0, 59] = flat[0, 57] + 0.002, flat[0, 59] - 0.002
    diffs = prediction_differences(_outputs([58, 40], [0.3, 0.6], flat), _outputs([57.8, 40], [0.3, 0.6], nudged))
    assert diffs["mean_age_diff_years"] == pytest.approx(0.1, abs=1e-5)
    assert diffs["max_age_dist_tv"] == pytest.approx(0.002, abs=1e-6)
    assert diffs["mean_expected_age_diff_years"] == pytest.approx(0.002, abs=1e-6)
    assert _refusal(diffs) is None
    peaked = np.zeros((1, 117))
    peaked[0, 30] = 1.0
    moved = np.zeros((1, 117))
    moved[0, 30], moved[0, 31] = 0.9, 0.1  # the read-out (median) stays at 30
    assert "total variation" in _refusal(prediction_differences(_outputs([30], [0.2], peaked),
                                                                _outputs([30], [0.2], moved)))


def test_export_check_of_read_out_ages_and_gender():
    refusal = _refusal(prediction_differences(_outputs([30, 40], [0.2, 0.9]), _outputs([30.4, 40], [0.2, 0.95])))
    assert "mean age diff" in refusal and "p female" in refusal and "total variation" not in refusal
    assert _refusal(prediction_differences(_outputs([30, 40], [0.2, 0.9]), _outputs([30.02, 40], [0.2, 0.9]))) is None


@pytest.mark.slow
def test_export_of_a_distribution_model_records_and_checks_its_distributions(tmp_path, monkeypatch):
    import agegender.serving.export as export
    from agegender.models import build_small_resnet, with_age_readout
    from agegender.serving.modelio import save_model_atomic

    model = with_age_readout(build_small_resnet(input_shape=(32, 32, 3), widths=(8,)), "median")
    path = save_model_atomic(model, tmp_path / "dist.keras", {"input": {"image_size": 32, "color_mode": "rgb"}})
    images = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 3)).astype("uint8")
    with monkeypatch.context() as mp:
        mp.setattr(export, "MAX_DIST_TV", -1.0)
        with pytest.raises(RuntimeError, match="total variation"):
            export_tflite(path, images)
    assert not path.with_suffix(".tflite").exists()
    check = export_tflite(path, images)["check"]
    assert check["max_age_dist_tv"] < 0.05 and check["mean_expected_age_diff_years"] < 0.15


def _assert_converts(model, tmp_path, side: int) -> None:
    """The model's TFLite conversion predicts what the Keras model predicts, every output."""
    from agegender.serving.export import convert

    path = tmp_path / "converted.tflite"
    path.write_bytes(convert(model, "none"))
    x = np.random.default_rng(4).uniform(0, 255, (3, side, side, 3)).astype("float32")
    lite, keras_out = predict_arrays(TFLiteModel(path), x), predict_arrays(model, x)
    np.testing.assert_allclose(lite["age"], keras_out["age"], atol=1e-3)
    np.testing.assert_allclose(lite["p_female"], keras_out["p_female"], atol=1e-5)
    np.testing.assert_allclose(lite["age_dist"], keras_out["age_dist"], atol=1e-5)


@pytest.mark.slow
def test_median_readout_converts(tmp_path):
    """The median read-out (cumsum + gather) survives the TFLite conversion."""
    from agegender.models import build_small_resnet, with_age_readout

    _assert_converts(with_age_readout(build_small_resnet(input_shape=(32, 32, 3), widths=(8,)), "median"), tmp_path, 32)


@pytest.mark.slow
def test_central_crop_converts(tmp_path):
    """AgeNet with a central crop (a slice of the input) survives the TFLite conversion."""
    from agegender.models import build_agenet

    _assert_converts(build_agenet(input_shape=(40, 40, 3), backbone_weights=None, crop_fraction=0.8), tmp_path, 40)
