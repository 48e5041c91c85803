"""The detail cap (models.detail_cap): OpenCV's two resizes as one fixed layer, its stage and its card."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from agegender.models.detail_cap import DetailCap, area_matrix, bilinear_matrix, cap_matrix, with_detail_cap


@pytest.mark.parametrize("side", [100, 80, 64, 37])
def test_the_layer_matches_opencvs_area_shrink_then_bilinear_enlargement(side):
    images = np.random.default_rng(side).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    expected = np.stack([cv2.resize(cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA), (128, 128),
                                    interpolation=cv2.INTER_LINEAR) for image in images])
    np.testing.assert_allclose(np.asarray(DetailCap(side)(images)), expected, atol=1e-3)


def test_the_matrices_keep_a_flat_image_flat_and_lose_the_finest_detail():
    for matrix in (area_matrix(128, 80), bilinear_matrix(80, 128), cap_matrix(128, 80)):
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)  # rows are weights that sum to one
    stripes = np.tile([0.0, 255.0], 64).astype("float32")  # the finest detail 128 px can hold
    assert (cap_matrix(128, 80) @ stripes).std() < 0.25 * stripes.std()  # most of it averaged away


def test_a_capped_model_keeps_its_outputs_and_survives_saving(tmp_path):
    from agegender.models import build_seed_cnn
    from agegender.serving.modelio import load_model, save_model_atomic

    model = build_seed_cnn(input_shape=(64, 64, 1))
    capped = with_detail_cap(model, 40)
    assert sorted(capped.output_names) == sorted(model.output_names)
    faces = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 1)).astype("float32")
    blurred = np.stack([cv2.resize(cv2.resize(f, (40, 40), interpolation=cv2.INTER_AREA), (64, 64),
                                   interpolation=cv2.INTER_LINEAR)[..., None] for f in faces])
    direct, through_cap = model.predict(blurred, verbose=0), capped.predict(faces, verbose=0)
    for key in direct:
        np.testing.assert_allclose(through_cap[key], direct[key], rtol=1e-4, atol=1e-4)
    save_model_atomic(capped, tmp_path / "capped.keras", {"name": "capped"})
    loaded, _ = load_model(tmp_path / "capped.keras")
    np.testing.assert_allclose(loaded.predict(faces, verbose=0)["age_out"], through_cap["age_out"], atol=1e-5)
    assert isinstance(loaded.get_layer("detail_cap"), DetailCap)


@pytest.mark.parametrize("side", [0, 64, 80])
def test_a_cap_must_lie_below_the_input_side(side):
    from agegender.models import build_seed_cnn

    with pytest.raises(ValueError, match="detail cap for 64 px faces"):
        with_detail_cap(build_seed_cnn(input_shape=(64, 64, 1)), side)


@pytest.mark.slow
def test_cap_detail_writes_a_remeasured_model_and_refuses_a_second_cap(tiny_model, tmp_path, capsys):
    import agegender.cli as cli
    from agegender.serving.modelio import read_card

    assert cli.main(["cap-detail", str(tiny_model.path), "--side", "40", "--name", "capped",
                     "--data", str(tiny_model.folder), "--models-dir", str(tmp_path)]) == 0
    assert "capped at 40 px" in capsys.readouterr().out
    card = read_card(tmp_path / "capped.keras")
    assert card["detail_cap"]["side"] == 40 and card["config"]["detail_cap"] == 40
    assert card["detail_cap"]["base_model"]["metrics"]["val"] == {
        k: tiny_model.card["metrics"]["val"][k] for k in ("age_mae", "gender_accuracy")}
    assert card["metrics"]["test"]["n"] == tiny_model.card["metrics"]["test"]["n"]
    assert card["evaluated_on"]["used_counts"]["test"] == card["metrics"]["test"]["n"]
    assert cli.main(["cap-detail", str(tmp_path / "capped.keras"), "--side", "32", "--name", "twice",
                     "--data", str(tiny_model.folder), "--models-dir", str(tmp_path)]) == 2
    assert "already caps" in capsys.readouterr().err


@pytest.mark.slow
def test_update_card_remeasures_val_and_test_and_keeps_the_replaced_figures(tiny_model, tmp_path, capsys):
    import agegender.cli as cli
    from agegender.serving.modelio import read_card

    for suffix in (".keras", ".json"):
        shutil.copyfile(tiny_model.path.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    card = read_card(tmp_path / "tiny.keras")
    card["metrics"]["test"]["age_mae"] = 99.0  # as if measured on an older split
    (tmp_path / "tiny.json").write_text(__import__("json").dumps(card))
    assert cli.main(["evaluate", "--update-card", "--model", str(tmp_path / "tiny.keras"),
                     str(tiny_model.folder)]) == 0
    out = capsys.readouterr().out
    assert "tiny test (10 faces)" in out
    card = read_card(tmp_path / "tiny.keras")
    assert card["metrics"]["test"]["age_mae"] == pytest.approx(tiny_model.card["metrics"]["test"]["age_mae"], abs=1e-3)
    assert card["metrics_before_remeasure"]["test"]["age_mae"] == 99.0
