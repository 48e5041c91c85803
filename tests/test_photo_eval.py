"""`agegender evaluate --photos`: labelled whole photos through the detect-crop-predict path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agegender.cli import main
from agegender.evaluation.photos import (LabelsError, largest_face_index, predict_photos, read_labels, summarise,
                                  evaluate_photos)
from agegender.serving.predict import FacePrediction

ASSETS = Path(__file__).parent / "assets"
FGNET = os.environ.get("FGNET_DIR")


def write_labels(folder: Path, text: str) -> Path:
    path = folder / "labels.csv"
    path.write_text(text)
    return path


# -- the labels file -----------------------------------------------------------------------------------
def test_read_labels_parses_genders_subjects_and_relative_paths(tmp_path):
    labels = write_labels(tmp_path, "file,age,gender,subject\na.jpg,30,female,p1\nsub/b.jpg,4.5,M,p1\nc.jpg,70,,p2\n")
    photos = read_labels(labels)
    assert [p.path for p in photos] == [tmp_path / "a.jpg", tmp_path / "sub" / "b.jpg", tmp_path / "c.jpg"]
    assert [p.age for p in photos] == [30.0, 4.5, 70.0]
    assert [p.gender for p in photos] == [1, 0, None]
    assert [p.subject for p in photos] == ["p1", "p1", "p2"]


def test_read_labels_takes_group_as_the_subject_column(tmp_path):
    photos = read_labels(write_labels(tmp_path, "file,age,group\na.jpg,3,x\n"))
    assert photos[0].subject == "x" and photos[0].gender is None


@pytest.mark.parametrize("text, message", [
    ("name,age\na.jpg,3\n", "missing column(s) file"),
    ("file,gender\na.jpg,m\n", "missing column(s) age"),
    ("file,age\na.jpg,three\n", "line 2: age 'three' is not a number"),
    ("file,age\na.jpg,-1\n", "outside 0-130"),
    ("file,age\na.jpg,nan\n", "outside 0-130"),
    ("file,age,gender\na.jpg,3,unknown\n", "gender 'unknown'"),
    ("file,age\na.jpg,3\na.jpg,4\n", "line 3: a.jpg is labelled twice"),
    ("file,age\n,3\n", "empty file name"),
    ("file,age\n", "no labelled photos"),
    ("", "no labelled photos"),
])
def test_read_labels_refuses_bad_files_with_the_line(tmp_path, text, message):
    with pytest.raises(LabelsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_labels(write_labels(tmp_path, text))


def test_read_labels_missing_or_binary_file(tmp_path):
    with pytest.raises(LabelsError, match="no such labels file"):
        read_labels(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81\x82" * 10)
    with pytest.raises(LabelsError, match="not a readable CSV"):
        read_labels(tmp_path / "bin.csv")


def test_largest_face_index():
    assert largest_face_index([[0, 0, 10, 10], [5, 5, 30, 20], [0, 0, 20, 30]]) == 1


# -- the metrics ---------------------------------------------------------------------------------------
class FakePredictor:
    """Finds one face of the image's own size, or none in a uniform image; predicts age = 2 x mean pixel."""

    path = "fake"

    def faces_in(self, image, aligned):
        array = np.asarray(image)
        if array.std() == 0:
            return [], []
        return [array[:8, :8]], [[0, 0, image.width, image.height]]

    def predict_crops(self, crops, boxes=None, batch_size=64):
        return [FacePrediction(age=float(2 * c.mean()), age_low=float(2 * c.mean() - 5), age_high=float(2 * c.mean() + 5),
                               gender="female" if c.mean() > 20 else "male", gender_probability=0.9, box=[0, 0, 0, 0])
                for c in crops]


def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, level in (("a.png", 10), ("b.png", 15), ("c.png", 30)):  # fake ages 20-ish, 30-ish, 60-ish
        pixels = np.clip(level + rng.integers(-2, 3, (16, 16, 3)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / name)
    Image.new("RGB", (16, 16), (90, 90, 90)).save(folder / "blank.png")
    (folder / "text.jpg").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    write_labels(folder, "file,age,gender,subject\na.png,18,male,p1\nb.png,33,female,p1\nc.png,60,female,p2\n"
                         "blank.png,40,male,p2\ntext.jpg,5,,p3\nempty.jpg,6,,p3\nmissing.jpg,7,,p3\n")
    return folder


def test_every_photo_is_accounted_for(tmp_path):
    folder = photo_folder(tmp_path)
    frame = predict_photos(FakePredictor(), read_labels(folder / "labels.csv"))
    assert list(frame["file"]) == ["a.png", "b.png", "c.png", "blank.png", "text.jpg", "empty.jpg", "missing.jpg"]
    assert list(frame["status"]) == ["ok", "ok", "ok", "missed", "error", "error", "error"]
    errors = dict(zip(frame["file"], frame["error"]))
    assert "not an image" in errors["text.jpg"] and "empty file" in errors["empty.jpg"]
    assert "no such file" in errors["missing.jpg"]


def test_summary_figures(tmp_path):
    folder = photo_folder(tmp_path)
    frame = predict_photos(FakePredictor(), read_labels(folder / "labels.csv"))
    metrics = summarise(frame)
    done = frame[frame["status"] == "ok"]
    error = done["age_pred"] - done["age"]
    assert metrics["photos"] == 7 and metrics["n"] == 3 and metrics["missed"] == 1 and metrics["errors"] == 3
    assert metrics["age_mae"] == pytest.approx(np.abs(error).mean())
    assert metrics["age_bias"] == pytest.approx(error.mean())
    assert metrics["standard_errors"] == "bootstrap over subjects" and metrics["subjects"] == 3
    decades = {row["group"]: row for row in metrics["by_decade"]}
    assert set(decades) == {"10-19", "30-39", "60-69"}
    assert decades["30-39"]["age_bias"] == pytest.approx(float(error.iloc[1]))
    by_gender = {row["group"]: row for row in metrics["by_gender"]}
    # a (mean ~10, male) right; b (mean ~15, predicted male, truly female) wrong; c (~30, female) right
    assert metrics["gender_accuracy"] == pytest.approx(2 / 3)
    assert by_gender["male"]["gender_accuracy"] == 1.0 and by_gender["female"]["gender_accuracy"] == 0.5
    assert 0.0 <= metrics["age_range_coverage"] <= 1.0


def test_bootstrap_over_subjects_is_wider_than_independent_rows_when_persons_cluster():
    rng = np.random.default_rng(1)
    persons = np.repeat(np.arange(20), 10)
    offsets = rng.normal(0, 5, 20)[persons]  # each person's photos share an error
    base = pd.DataFrame({"file": [f"{i}.jpg" for i in range(200)], "age": 30.0, "gender": None,
                         "status": "ok", "age_low": 0.0, "age_high": 100.0, "p_female": 0.5})
    clustered = summarise(base.assign(subject=persons.astype(str), age_pred=30.0 + offsets))
    independent = summarise(base.assign(subject=None, age_pred=30.0 + offsets))
    assert independent["standard_errors"] == "independent photos"
    assert clustered["age_bias_se"] > 2 * independent["age_bias_se"]


def test_no_face_in_any_photo_gives_counts_without_figures(tmp_path):
    folder = tmp_path / "blank"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "x.png")
    write_labels(folder, "file,age\nx.png,3\n")
    metrics = evaluate_photos(folder, predictor=FakePredictor())
    assert metrics["n"] == 0 and metrics["missed"] == 1 and "age_mae" not in metrics
    assert metrics["failures"] == [{"file": "x.png", "status": "missed", "error": None}]


# -- the command line, with the default model ---------------------------------------------------------
@pytest.fixture(scope="module")
def real_photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("real_photos")
    shutil.copyfile(ASSETS / "face.jpg", folder / "face.jpg")
    shutil.copyfile(ASSETS / "group3.jpg", folder / "group three.jpg")  # a space in the name
    Image.new("RGB", (320, 240), (200, 200, 200)).save(folder / "wall.jpg")
    (folder / "notes.jpg").write_text("text named .jpg")
    real = (ASSETS / "face.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(real[: len(real) // 3])
    write_labels(folder, "file,age,gender\nface.jpg,30,male\ngroup three.jpg,35,\nwall.jpg,20,female\n"
                         "notes.jpg,40,\ncut.jpg,50,\n")
    return folder


@pytest.mark.slow
def test_cli_evaluate_photos_json_with_the_default_model(real_photos, tmp_path, capsys):
    out_csv = tmp_path / "rows.csv"
    assert main(["evaluate", "--photos", str(real_photos), "--json", "--predictions", str(out_csv)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["photos"] == 5 and metrics["n"] == 2 and metrics["missed"] == 1 and metrics["errors"] == 2
    assert {f["file"]: f["status"] for f in metrics["failures"]} == {
        "wall.jpg": "missed", "notes.jpg": "error", "cut.jpg": "error"}
    rows = pd.read_csv(out_csv)
    assert len(rows) == 5 and rows.loc[rows["file"] == "face.jpg", "age_pred"].between(5, 90).all()
    group = rows[rows["file"] == "group three.jpg"].iloc[0]
    assert group["faces"] == 3  # the largest of three faces is the one evaluated
    assert metrics["gender_n"] == 1


def test_cli_evaluate_photos_text_and_errors(real_photos, tmp_path, capsys):
    assert main(["evaluate", "--photos", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["evaluate", "--photos", str(real_photos), "--labels", str(tmp_path / "x.csv")]) == 2
    assert "no such labels file" in capsys.readouterr().err
    assert main(["evaluate", "--labels", "x.csv"]) == 2
    assert "go with --photos" in capsys.readouterr().err
    assert main(["evaluate", "--photos"]) == 2
    assert "needs the folder" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not FGNET, reason="set FGNET_DIR to ../shared/datasets/fgnet")
def test_fgnet_every_photo_has_a_face(capsys):
    assert main(["evaluate", "--photos", FGNET, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["photos"] == 1002 and metrics["missed"] == 0 and metrics["errors"] == 0
    assert metrics["subjects"] == 82
