"""Metrics on hand-made predictions, `agegender evaluate`, and prediction on good and bad files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agegender.cli import main
from agegender.data import dataset_fingerprint, load_utkface
from agegender.evaluation.metrics import (HIGH_QUANTILES, LOW_QUANTILES, age_band, calibrate_range, calibration,
                                          evaluate_predictions, format_report, range_coverage, standard_errors)
from agegender.serving.inference import (RANGE_QUANTILES, age_ranges, card_range_quantiles, centre_zoom, predict_arrays,
                                         tta_settings)

from conftest import BAD_FILES

BY_KIND = {kind: name for name, kind in BAD_FILES.items()}
READABLE = ("unparsable", "alpha", "grayscale", "webp")  # odd, but images a person can use
ERRORS = {"text": "not an image file", "empty": "empty file", "truncated": "corrupt or truncated",
          "corrupt": "corrupt or truncated", "bomb": "decompression bomb"}
METRIC_KEYS = {"n", "age_mae", "age_rmse", "age_bias", "gender_accuracy", "baseline", "by_age_band", "by_decade", "by_race", "by_gender",
               "confusion_matrix", "gender_calibration", "age_mae_se", "gender_accuracy_se"}


# -- evaluate_predictions -------------------------------------------------------------------------------
@pytest.fixture
def handmade():
    frame = pd.DataFrame({"age": [10, 25, 45, 70], "gender": [0, 1, 1, 0],
                          "race": pd.array([0, 1, None, 2], dtype="Int64")})
    age_pred = np.array([12.0, 25.0, 40.0, 60.0])  # errors 2, 0, 5, 10
    p_female = np.array([0.25, 0.95, 0.45, 0.35])  # predicted m, f, m, m
    return frame, age_pred, p_female


def test_overall_metrics(handmade):
    m = evaluate_predictions(*handmade)
    assert m["n"] == 4
    assert m["age_mae"] == pytest.approx(4.25)
    assert m["age_rmse"] == pytest.approx(math.sqrt((4 + 0 + 25 + 100) / 4))
    assert m["age_bias"] == pytest.approx((2 + 0 - 5 - 10) / 4)
    assert m["gender_accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == {"labels": ["male", "female"], "rows_true_cols_predicted": [[2, 0], [1, 1]]}
    assert set(m) == METRIC_KEYS


def test_standard_errors(handmade):
    m = evaluate_predictions(*handmade)
    # |errors| 2, 0, 5, 10: sample std with ddof=1, over sqrt(4); accuracy 3 of 4
    assert m["age_mae_se"] == pytest.approx(np.std([2, 0, 5, 10], ddof=1) / 2)
    assert m["gender_accuracy_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    male = next(r for r in m["by_gender"] if r["group"] == "male")  # errors 2, 10, both right
    assert male["age_mae_se"] == pytest.approx(np.std([2, 10], ddof=1) / math.sqrt(2))
    assert male["gender_accuracy_se"] == 0.0
    one_face = m["by_age_band"][0]
    assert one_face["age_mae_se"] is None and one_face["gender_accuracy_se"] == 0.0  # None, not NaN: cards are JSON
    assert standard_errors(np.array([]), np.array([])) == {"age_mae_se": None, "gender_accuracy_se": None}
    assert "standard errors" in format_report(m) and "+/- 2.17 y" in format_report(m)
    single = evaluate_predictions(handmade[0].iloc[:1], handmade[1][:1], handmade[2][:1])
    assert single["age_mae_se"] is None and "standard errors" not in format_report(single)  # one face: no SE, no crash


def test_baseline_from_frame_and_from_train(handmade):
    m = evaluate_predictions(*handmade)
    # median of 10, 25, 45, 70 is 35; a 2:2 tie goes to female
    assert m["baseline"] == {"age": 35.0, "age_mae": pytest.approx((25 + 10 + 10 + 35) / 4),
                             "gender": "female", "gender_accuracy": 0.5}
    m = evaluate_predictions(*handmade, train_ages=np.array([20, 22, 90]), train_genders=np.array([0, 0, 1]))
    assert m["baseline"] == {"age": 22.0, "age_mae": pytest.approx((12 + 3 + 23 + 48) / 4),
                             "gender": "male", "gender_accuracy": 0.5}


def test_groups(handmade):
    m = evaluate_predictions(*handmade)
    bands = {r["group"]: (r["n"], r["age_mae"], r["gender_accuracy"]) for r in m["by_age_band"]}
    assert bands == {"0-12": (1, 2.0, 1.0), "20-39": (1, 0.0, 1.0), "40-59": (1, 5.0, 0.0), "60+": (1, 10.0, 1.0)}
    assert [r["group"] for r in m["by_age_band"]] == ["0-12", "20-39", "40-59", "60+"]  # empty band left out
    assert [r["age_bias"] for r in m["by_age_band"]] == [2.0, 0.0, -5.0, -10.0]  # signed: over- vs underestimates
    races = {r["group"]: (r["n"], r["age_mae"]) for r in m["by_race"]}
    assert races == {"White": (1, 2.0), "Black": (1, 0.0), "Asian": (1, 10.0), "unknown": (1, 5.0)}
    genders = {r["group"]: (r["n"], r["age_mae"], r["gender_accuracy"]) for r in m["by_gender"]}
    assert genders == {"male": (2, 6.0, 1.0), "female": (2, 2.5, 0.5)}


def test_calibration(handmade):
    m = evaluate_predictions(*handmade)
    cal = m["gender_calibration"]
    assert cal["ece"] == pytest.approx((0.25 + 0.05 + 0.55 + 0.35) / 4)
    assert [b["n"] for b in cal["bins"]] == [1, 1, 1, 1]
    assert [b["bin"] for b in cal["bins"]] == ["0.2-0.3", "0.3-0.4", "0.4-0.5", "0.9-1.0"]
    perfect = calibration(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]))
    assert perfect["ece"] == pytest.approx(0.0)


def test_age_range_coverage(handmade):
    frame, age_pred, p_female = handmade
    dist = np.zeros((4, 117))
    dist[0, 8:13] = 0.2    # 10 % quantile at 8, 90 % at 12: holds 10
    dist[1, 30:35] = 0.2   # 30..34: 25 is below
    dist[2, 45] = 1.0      # a point mass: the range is [45, 45] and holds 45
    dist[3, 60:64] = 0.25  # 60..63: 70 is above
    low, high = age_ranges(dist)
    assert list(low) == [8, 30, 45, 60] and list(high) == [12, 34, 45, 63]
    # the same ends as np.searchsorted on each row's cumulative distribution
    for row, lo, hi in zip(dist, low, high):
        assert (lo, hi) == tuple(float(np.searchsorted(np.cumsum(row), q)) for q in (0.1, 0.9))
    m = evaluate_predictions(frame, age_pred, p_female, age_dist=dist)
    assert m["age_range"] == {"quantiles": [0.1, 0.9], "coverage": 0.5, "mean_width_years": pytest.approx((4 + 4 + 0 + 3) / 4),
                              "below": 0.25, "above": 0.25}
    assert "holds the true age for 50.0 % of faces" in format_report(m)
    assert "age_range" not in evaluate_predictions(*handmade)


def _gaussian_dists(centres: np.ndarray, sd: float) -> np.ndarray:
    ages = np.arange(117)
    dist = np.exp(-0.5 * ((ages[None, :] - centres[:, None]) / sd) ** 2)
    return dist / dist.sum(axis=1, keepdims=True)


def test_calibrate_range_narrows_an_over_wide_range_and_widens_an_over_narrow_one():
    rng = np.random.default_rng(0)
    centres = rng.uniform(20, 80, 4000)
    true_age = np.round(centres + rng.normal(0, 4.0, len(centres)))  # errors of sd 4 years
    too_wide, too_narrow = _gaussian_dists(centres, 8.0), _gaussian_dists(centres, 2.0)
    assert range_coverage(true_age, too_wide)["coverage"] > 0.95
    assert range_coverage(true_age, too_narrow)["coverage"] < 0.55
    for dist, inward in ((too_wide, True), (too_narrow, False)):
        low, high = calibrate_range(true_age, dist)
        assert (low > 0.1 and high < 0.9) if inward else (low < 0.1 and high > 0.9)
        assert low in LOW_QUANTILES and high in HIGH_QUANTILES
        calibrated = range_coverage(true_age, dist, (low, high))
        assert calibrated["quantiles"] == [low, high]
        assert calibrated["below"] == pytest.approx(0.1, abs=0.03) and calibrated["above"] == pytest.approx(0.1, abs=0.03)
        assert calibrated["coverage"] == pytest.approx(0.8, abs=0.05)


def test_calibrate_range_prefers_the_wider_range_on_ties_and_refuses_no_faces():
    # a point mass at each true age: every quantile leaves no age outside, so all are equally close (0.1 away)
    true_age = np.array([10.0, 40.0, 70.0])
    dist = np.zeros((3, 117))
    dist[np.arange(3), true_age.astype(int)] = 1.0
    assert calibrate_range(true_age, dist) == (LOW_QUANTILES[0], HIGH_QUANTILES[-1])
    with pytest.raises(ValueError, match="at least one face"):
        calibrate_range(np.array([]), np.zeros((0, 117)))


def test_card_range_quantiles_are_those_of_the_val_metrics():
    assert card_range_quantiles({}) == RANGE_QUANTILES  # cards from before the calibration
    assert card_range_quantiles({"metrics": {"val": {"age_mae": 5.0}}}) == RANGE_QUANTILES
    card = {"metrics": {"val": {"age_range": {"quantiles": [0.175, 0.83]}}}}
    assert card_range_quantiles(card) == (0.175, 0.83)


def test_centre_zoom():
    """0.5 keeps the middle half of the image (here a grey square on black), 2.0 shrinks it into a black frame."""
    images = np.zeros((2, 64, 64, 3), np.float32)
    images[:, 16:48, 16:48] = 200.0
    assert centre_zoom(images, 1.0) is images
    closer = centre_zoom(images, 0.5)
    assert closer.shape == images.shape and closer.dtype == np.float32
    np.testing.assert_allclose(closer, 200.0, atol=1e-3)
    farther = centre_zoom(np.full((1, 64, 64, 1), 255.0, np.float32), 2.0)
    assert farther.shape == (1, 64, 64, 1)
    assert farther[0, :8].max() == 0.0 and farther[0, 32, :8].max() == 0.0
    np.testing.assert_allclose(farther[0, 24:40, 24:40], 255.0, atol=1e-3)


def test_test_time_views_average_the_separate_predictions(tiny_model):
    """Flip and zoom views go through in one call and average to what each view predicts on its own."""
    from agegender.serving.modelio import load_model

    model, card = load_model(tiny_model.path)
    assert tta_settings(card) == {"tta_flip": False, "tta_zoom": ()}  # a card without views
    assert tta_settings({"tta_flip": True, "tta_zoom": [0.9]}) == {"tta_flip": True, "tta_zoom": (0.9,)}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 64, 64, 1)).astype(np.float32)
    zoomed = centre_zoom(images, 0.9)
    views = [images, zoomed, images[:, :, ::-1], zoomed[:, :, ::-1]]
    alone = [predict_arrays(model, np.ascontiguousarray(v)) for v in views]
    together = predict_arrays(model, images, batch_size=2, tta_flip=True, tta_zoom=(0.9,))
    for key in ("age", "p_female"):
        np.testing.assert_allclose(together[key], np.mean([a[key] for a in alone], axis=0), rtol=1e-4, atol=1e-4)
    assert not np.allclose(together["age"], alone[0]["age"])


def test_age_band_edges():
    assert list(age_band(np.array([0, 12, 13, 19, 20, 39, 40, 59, 60, 116]))) == [
        "0-12", "0-12", "13-19", "13-19", "20-39", "20-39", "40-59", "40-59", "60+", "60+"]


def test_format_report(handmade):
    text = format_report(evaluate_predictions(*handmade), "title")
    assert text.startswith("title")
    assert "age MAE 4.25" in text and "75.0 %" in text and "[[2, 0], [1, 1]]" in text


# -- agegender evaluate -------------------------------------------------------------------------------
def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_evaluate_json(tiny_model, capsys):
    code, out, _ = _run(capsys, ["evaluate", "--json", "--model", tiny_model.path, tiny_model.folder])
    assert code == 0
    m = json.loads(out)
    assert METRIC_KEYS | {"model", "folder", "subset", "data_fingerprint", "skipped", "undecodable"} <= set(m)
    assert m["n"] == 10 and m["subset"] == "test"
    assert m["model"] == str(tiny_model.path) and m["folder"] == str(tiny_model.folder)
    assert m["data_fingerprint"] == tiny_model.card["data"]["fingerprint"]
    assert m["skipped"] == {} and m["undecodable"] == 0
    # same model, same test images as at the end of training: same numbers
    assert m["age_mae"] == pytest.approx(tiny_model.card["metrics"]["test"]["age_mae"], abs=1e-3)
    assert m["gender_accuracy"] == pytest.approx(tiny_model.card["metrics"]["test"]["gender_accuracy"])


def test_cli_evaluate_text_and_all(tiny_model, capsys):
    code, out, _ = _run(capsys, ["evaluate", "--all", "--model", tiny_model.path, tiny_model.folder])
    assert code == 0
    assert "n=60" in out and "age MAE" in out and "all images" in out


def test_cli_evaluate_bad_folder(tiny_model, bad_folder, capsys):
    code, out, _ = _run(capsys, ["evaluate", "--json", "--all", "--model", tiny_model.path, bad_folder])
    assert code == 0
    m = json.loads(out)
    assert set(m["skipped"]) == {"unparsable names", "empty files", "non-image files"}
    assert m["undecodable"] == 3  # truncated, corrupt, bomb
    assert m["n"] == len(load_utkface(bad_folder)) - 3


def test_cli_evaluate_missing_model(tmp_path, tiny_folder, capsys):
    code, out, err = _run(capsys, ["evaluate", "--model", tmp_path / "none.keras", tiny_folder])
    assert code == 2
    assert out == ""
    assert err.startswith("error: model file") and "not found" in err


def test_cli_evaluate_missing_folder(tiny_model, tmp_path, capsys):
    code, _, err = _run(capsys, ["evaluate", "--model", tiny_model.path, tmp_path / "nowhere"])
    assert code == 2 and "UTKFACE_DIR" in err


@pytest.mark.slow
@pytest.mark.full_data
def test_cli_evaluate_full_data(tiny_model, capsys):
    folder = os.environ["UTKFACE_DIR"]
    code, out, _ = _run(capsys, ["evaluate", "--json", "--model", tiny_model.path, folder])
    assert code == 0
    m = json.loads(out)
    frame = load_utkface(folder)
    assert m["data_fingerprint"] == dataset_fingerprint(frame)
    assert m["n"] + m["undecodable"] == int((frame["split"] == "test").sum())
    assert m["n"] > 2000
    assert sum(r["n"] for r in m["by_age_band"]) == m["n"]
    assert sum(r["n"] for r in m["by_race"]) == m["n"]
    assert 0 < m["age_mae"] < 60 and 0 <= m["gender_accuracy"] <= 1


# -- agegender predict --------------------------------------------------------------------------------
def _bad_folder_files(bad_folder) -> list[Path]:
    return sorted(bad_folder.iterdir())


def _check_results(results, inputs):
    assert [r["path"] for r in results] == [str(p) for p in inputs]  # one per input, in order
    for path, result in zip(inputs, results):
        kind = BAD_FILES.get(Path(path).name, "good")
        if kind in ERRORS or kind == "missing":
            assert "faces" not in result
            assert (ERRORS[kind] if kind in ERRORS else "no such file") in result["error"]
            continue
        assert "error" not in result, result
        assert len(result["faces"]) == 1
        face = result["faces"][0]
        assert set(face) == {"age", "age_low", "age_high", "gender", "gender_probability", "box", "gender_shown",
                             "gender_confidence"}
        assert isinstance(face["age"], float)
        assert face["age_low"] <= face["age"] <= face["age_high"]
        assert face["gender"] in ("male", "female")
        assert 0.5 <= face["gender_probability"] <= 1.0
        # the tiny model's card has no calibration: shown as the model gives it, never "uncertain"
        assert (face["gender_shown"], face["gender_confidence"]) == (face["gender"], face["gender_probability"])
        with Image.open(path) as img:
            assert face["box"] == [0, 0, img.width, img.height]


def test_cli_predict_mixed_files(tiny_model, bad_folder, tmp_path, capsys):
    missing = tmp_path / "40_0_0_20170101000000009.jpg"
    inputs = [*_bad_folder_files(bad_folder), missing]
    code, out, _ = _run(capsys, ["predict", "--aligned", "--json", "--model", tiny_model.path, *inputs])
    assert code == 0
    results = json.loads(out)
    assert len(results) == len(inputs)
    assert "no such file" in results[-1]["error"]
    _check_results(results[:-1], inputs[:-1])
    readable = [r for r in results if "faces" in r]
    assert len(readable) == 6 + len(READABLE)


def test_cli_predict_a_folder_means_the_images_inside_it(tiny_model, bad_folder, tmp_path, capsys):
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    code, out, _ = _run(capsys, ["predict", "--aligned", "--json", "--model", tiny_model.path, str(bad_folder),
                                 str(empty)])
    assert code == 0
    results = json.loads(out)
    # every file named or made like an image is reported, the text and empty ".jpg" files as errors: a damaged photo
    # in a folder is not dropped unseen
    inside = _bad_folder_files(bad_folder)
    assert [r["path"] for r in results[:-1]] == [str(p) for p in inside]
    _check_results(results[:-1], inside)
    by_name = {Path(r["path"]).name: r for r in results[:-1]}
    for kind in ("text", "empty"):
        assert ERRORS[kind] in by_name[BY_KIND[kind]]["error"]
    assert results[-1] == {"path": str(empty), "error": f"{empty}: a folder with no image files in it"}


def test_annotating_a_folder_names_each_copy_after_its_own_image(tiny_model, bad_folder, good_names, tmp_path):
    from agegender.serving.predict import Predictor

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in good_names[:2]:
        (folder / name).write_bytes((bad_folder / name).read_bytes())
    results = Predictor.load(tiny_model.path).predict_files([folder], aligned=True, annotate_dir=tmp_path / "ann")
    assert [Path(r["annotated"]).name for r in results] == [f"{Path(n).stem}_annotated.jpg" for n in good_names[:2]]
    assert all(Path(r["annotated"]).is_file() for r in results)


def test_photos_of_one_name_in_two_folders_get_an_annotated_copy_each(tiny_model, bad_folder, good_names, tmp_path):
    from agegender.serving.predict import Predictor

    for folder, name in (("a", good_names[0]), ("b", good_names[1])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.jpg").write_bytes((bad_folder / name).read_bytes())
    results = Predictor.load(tiny_model.path).predict_files([tmp_path / "a", tmp_path / "b"], aligned=True,
                                                            annotate_dir=tmp_path / "ann")
    assert [Path(r["annotated"]).name for r in results] == ["photo_annotated.jpg", "photo_annotated-2.jpg"]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["photo_annotated-2.jpg", "photo_annotated.jpg"]


def test_photos_are_predicted_a_chunk_at_a_time_with_the_same_results(tiny_model, bad_folder, good_names,
                                                                       monkeypatch, tmp_path):
    """A folder is read in chunks (memory holds one chunk) and every photo keeps its own result, in order."""
    from agegender.serving import predict as predict_module

    predictor = predict_module.Predictor.load(tiny_model.path)
    files = [bad_folder / good_names[0], bad_folder / BY_KIND["corrupt"], bad_folder / good_names[1],
             bad_folder / BY_KIND["text"], bad_folder / good_names[2]]
    whole = predictor.predict_files(files, aligned=True)
    chunks = []
    predict_chunk = predict_module.Predictor._predict_chunk
    monkeypatch.setattr(predict_module, "PHOTOS_PER_CHUNK", 2)
    monkeypatch.setattr(predict_module.Predictor, "_predict_chunk",
                        lambda self, paths, *args: chunks.append(len(paths)) or predict_chunk(self, paths, *args))
    chunked = predictor.predict_files(files, aligned=True, annotate_dir=tmp_path / "ann")
    assert chunks == [2, 2, 1]
    assert [r["path"] for r in chunked] == [str(f) for f in files]
    for one, other in zip(whole, chunked):
        assert ("error" in one) == ("error" in other)
        for a, b in zip(one.get("faces", []), other.get("faces", [])):
            assert a["age"] == pytest.approx(b["age"], abs=1e-4) and a["gender"] == b["gender"]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == sorted(
        f"{Path(n).stem}_annotated.jpg" for n in good_names[:3])


def test_cli_predict_all_bad(tiny_model, bad_folder, capsys):
    files = [bad_folder / BY_KIND[k] for k in ERRORS]
    code, out, _ = _run(capsys, ["predict", "--aligned", "--json", "--model", tiny_model.path, *files])
    assert code != 0
    results = json.loads(out)
    assert len(results) == len(files) and all("error" in r for r in results)


def test_cli_predict_text_output(tiny_model, bad_folder, good_names, capsys):
    files = [bad_folder / good_names[0], bad_folder / BY_KIND["empty"]]
    code, out, _ = _run(capsys, ["predict", "--aligned", "--model", tiny_model.path, *files])
    assert code == 0
    assert good_names[0][:40] in out and "error:" in out and "empty file" in out


def test_cli_predict_missing_model(tmp_path, bad_folder, good_names, capsys):
    code, _, err = _run(capsys, ["predict", "--aligned", "--model", tmp_path / "x.keras", bad_folder / good_names[0]])
    assert code == 2 and "not found" in err


@pytest.mark.slow
def test_console_script_predict_json(tiny_model, bad_folder, good_names):
    """The installed entry point prints pure JSON on stdout (logs go elsewhere)."""
    exe = Path(sys.executable).with_name("agegender")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "agegender.cli"]
    files = [bad_folder / good_names[0], bad_folder / BY_KIND["text"]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([*command, "predict", "--aligned", "--json", "--model", str(tiny_model.path),
                           *map(str, files)], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    _check_results(results, files)


def test_predictor_api_and_annotation(tiny_model, bad_folder, good_names, tmp_path):
    from agegender.serving.predict import Predictor, format_results

    predictor = Predictor.load(tiny_model.path)
    assert predictor.image_size == 64 and predictor.color_mode == "grayscale"
    files = [bad_folder / good_names[0], bad_folder / BY_KIND["webp"], bad_folder / BY_KIND["corrupt"]]
    results = predictor.predict_files(files, aligned=True, annotate_dir=tmp_path / "ann")
    _check_results([{k: v for k, v in r.items() if k != "annotated"} for r in results], files)
    for result in results[:2]:
        with Image.open(result["annotated"]) as img:
            assert img.size == (200, 200)
    assert "annotated" not in results[2]
    # a face's range without a distribution head is age +- the test MAE from the card
    face = results[0]["faces"][0]
    half = tiny_model.card["metrics"]["test"]["age_mae"]
    assert face["age_high"] == pytest.approx(face["age"] + half, abs=2e-3)
    assert "error" in format_results(results)


@pytest.mark.behavioural
def test_mirror_agreement(tiny_model, bad_folder, good_names):
    """A face and its mirror image should get (nearly) the same age and gender."""
    from agegender.data.images import open_image
    from agegender.serving.predict import Predictor

    predictor = Predictor.load(tiny_model.path)
    for name in good_names:
        image = open_image(bad_folder / name)
        [a] = predictor.predict_image(image, aligned=True)
        [b] = predictor.predict_image(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), aligned=True)
        p_a = a.gender_probability if a.gender == "female" else 1 - a.gender_probability
        p_b = b.gender_probability if b.gender == "female" else 1 - b.gender_probability
        assert abs(a.age - b.age) < 5.0, name
        assert abs(p_a - p_b) < 0.2, name


def test_bias_by_decade(handmade):
    frame, age_pred, p_female = handmade
    m = evaluate_predictions(frame, age_pred, p_female)
    decades = {row["group"]: row for row in m["by_decade"]}
    for label, row in decades.items():
        low = 70 if label == "70+" else int(label.split("-")[0])
        high = 200 if label == "70+" else low + 9
        inside = (frame["age"] >= low) & (frame["age"] <= high)
        assert row["n"] == int(inside.sum())
        assert row["age_bias"] == pytest.approx(float((np.asarray(age_pred)[inside] - frame["age"][inside]).mean()))
    assert sum(row["n"] for row in m["by_decade"]) == m["n"]
