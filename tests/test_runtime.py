"""The serving runtime as ``pip install .`` installs it: the shipped model and the face detector on LiteRT, and no
TensorFlow, Keras or pandas on the serving path.

Runs in any environment; ``make test-runtime`` runs it, with the other tests marked ``runtime``, in .venv-runtime,
which has no TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.cli import main
from agegender.serving import modelio

pytestmark = pytest.mark.runtime

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "agenet.keras"
EXPORT = REPO / "models" / "agenet.tflite"
PHOTO = REPO / "tests" / "assets" / "face.jpg"
GROUP = REPO / "tests" / "assets" / "group3.jpg"
CROP = sorted((REPO / "data" / "sample").glob("*.jpg.chip.jpg"))[0]
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
HAS_KERAS = importlib.util.find_spec("keras") is not None


def predict_json(capsys, *args: str) -> tuple[int, list[dict]]:
    code = main(["predict", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def export_copy(tmp_path) -> Path:
    """The shipped export and its card in a folder of their own, free to damage."""
    target = tmp_path / "agenet.tflite"
    shutil.copyfile(EXPORT, target)
    shutil.copyfile(modelio.card_path(EXPORT), modelio.card_path(target))
    return target


# -- nothing of training on the serving path -------------------------------------------------------------------
@pytest.mark.skipif(not HAS_LITERT, reason="LiteRT (ai-edge-litert) not installed: tf.lite, the fallback, is TensorFlow")
@pytest.mark.parametrize("model", [MODEL, EXPORT], ids=["keras-card-names-export", "tflite"])
def test_serving_imports_neither_tensorflow_keras_nor_pandas(model):
    script = textwrap.dedent(f"""
        import sys
        from agegender.cli import main
        assert main(["predict", "--json", "--model", {str(model)!r}, {str(PHOTO)!r}]) == 0
        assert main(["predict", "--json", "--aligned", "--model", {str(model)!r}, {str(CROP)!r}]) == 0
        assert main(["predict", "--model", {str(model)!r}, {str(GROUP)!r}]) == 0
        import agegender.app
        loaded = sorted({{name.split(".")[0] for name in sys.modules}} & {{"tensorflow", "keras", "pandas"}})
        print("LOADED", loaded)
    """)
    env = {**os.environ, "AGEGENDER_TFLITE_RUNTIME": "litert"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


# -- predictions --------------------------------------------------------------------------------------------------
def test_predict_shows_gender_as_the_app_does(capsys, tmp_path):
    """`predict` gives the calibrated confidence and "uncertain" below the card's threshold, beside the raw label."""
    from conftest import GENDER_CONFIDENCE, calibrated_model_copy

    from agegender.serving.gender_confidence import GenderConfidence

    model = calibrated_model_copy(EXPORT, tmp_path / "models")
    code, results = predict_json(capsys, "--model", str(model), str(REPO / "data" / "examples" / "child.jpg"),
                                 str(PHOTO))
    assert code == 0
    child, adult = results[0]["faces"][0], results[1]["faces"][0]
    calibration = GenderConfidence.from_card({"gender_confidence": GENDER_CONFIDENCE})
    for face in (child, adult):
        p_female = face["gender_probability"] if face["gender"] == "female" else 1 - face["gender_probability"]
        call = calibration.call(p_female)
        assert (face["gender_shown"], face["gender_confidence"]) == (call.gender, pytest.approx(call.confidence,
                                                                                                abs=2e-3))
    assert child["gender_shown"] == "uncertain" and child["gender_confidence"] < GENDER_CONFIDENCE["threshold"]
    assert adult["gender_shown"] == adult["gender"] and adult["gender_confidence"] < adult["gender_probability"]
    assert main(["predict", "--model", str(model), str(REPO / "data" / "examples" / "child.jpg")]) == 0
    assert " uncertain " in capsys.readouterr().out


def test_predict_a_photo(capsys):
    code, results = predict_json(capsys, str(PHOTO))
    assert code == 0
    [face] = results[0]["faces"]
    assert 0 <= face["age_low"] <= face["age"] <= face["age_high"] <= 116
    assert face["gender"] in ("male", "female") and 0.5 <= face["gender_probability"] <= 1
    x, y, w, h = face["box"]
    width, height = Image.open(PHOTO).size
    assert w > 20 and h > 20 and x + w <= width and y + h <= height


def test_predict_an_aligned_crop_near_its_label(capsys):
    code, results = predict_json(capsys, "--aligned", str(CROP))
    assert code == 0
    [face] = results[0]["faces"]
    assert face["box"] == [0, 0, 200, 200]
    true_age = int(CROP.name.split("_")[0])
    assert abs(face["age"] - true_age) < 15


def test_group_photo_faces_left_to_right(capsys):
    code, results = predict_json(capsys, str(GROUP))
    assert code == 0
    boxes = [face["box"] for face in results[0]["faces"]]
    assert len(boxes) == 3 and [b[0] for b in boxes] == sorted(b[0] for b in boxes)


# -- bad inputs keep their clear errors -------------------------------------------------------------------------
def test_bad_images_are_reported_and_the_good_one_predicted(tmp_path, capsys):
    real = PHOTO.read_bytes()
    (tmp_path / "corrupt.jpg").write_bytes(real[:400] + bytes(range(256)) * 8)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture, just text named like one\n")
    Image.new("RGB", (320, 240), (128, 128, 128)).save(tmp_path / "grey.png")
    shutil.copyfile(PHOTO, tmp_path / "face.jpg")
    code, results = predict_json(capsys, str(tmp_path))
    assert code == 0
    by_name = {Path(r["path"]).name: r for r in results}
    assert "corrupt or truncated" in by_name["corrupt.jpg"]["error"]
    assert "empty file" in by_name["empty.jpg"]["error"]
    assert "not an image file" in by_name["notes.jpg"]["error"]
    assert by_name["grey.png"]["faces"] == [] and by_name["grey.png"]["note"] == "no face found"
    assert len(by_name["face.jpg"]["faces"]) == 1


def test_nothing_predicted_exits_non_zero(tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    code, results = predict_json(capsys, str(tmp_path / "empty.jpg"))
    assert code == 1 and "error" in results[0]


def test_missing_model(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nothing.tflite"), str(PHOTO)]) == 2
    assert "not found" in capsys.readouterr().err


def test_truncated_export_is_refused(export_copy, capsys):
    data = export_copy.read_bytes()
    export_copy.write_bytes(data[: len(data) // 2])
    assert main(["predict", "--model", str(export_copy), str(PHOTO)]) == 2
    assert "is damaged: it has" in capsys.readouterr().err


def test_altered_export_is_refused_even_with_its_digest_cached(export_copy, capsys):
    assert main(["predict", "--json", "--model", str(export_copy), str(PHOTO)]) == 0
    capsys.readouterr()
    assert modelio.hash_record_path(export_copy).is_file()  # the first load recorded the digest
    before = export_copy.stat()
    with open(export_copy, "r+b") as handle:  # same size, same mtime: only the ctime tells
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(export_copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert main(["predict", "--model", str(export_copy), str(PHOTO)]) == 2
    assert "its SHA-256 is not the one its card records" in capsys.readouterr().err


def test_export_without_its_card(export_copy, capsys):
    modelio.card_path(export_copy).unlink()
    assert main(["predict", "--model", str(export_copy), str(PHOTO)]) == 2
    assert "model card" in capsys.readouterr().err


@pytest.mark.skipif(HAS_KERAS, reason="Keras is installed: the Keras model would serve")
def test_keras_model_without_keras_says_what_to_install(tmp_path, capsys):
    model = tmp_path / "agenet.keras"
    shutil.copyfile(MODEL, model)
    card = json.loads(modelio.card_path(MODEL).read_text())
    card.pop("tflite")  # no export to serve instead
    modelio.card_path(model).write_text(json.dumps(card))
    assert main(["predict", "--model", str(model), str(PHOTO)]) == 2
    assert "pip install '.[train]'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_training_commands_say_what_to_install(capsys):
    assert main(["train", "--set", "epochs=1"]) == 2
    assert "pip install '.[train]'" in capsys.readouterr().err


# -- HEIC / HEIF ----------------------------------------------------------------------------------------------------
def test_heic_photo_and_crop(tmp_path, capsys):
    pillow_heif = pytest.importorskip("pillow_heif")
    photo, crop = tmp_path / "face.heic", tmp_path / "crop.HEIF"
    pillow_heif.from_pillow(Image.open(PHOTO).convert("RGB")).save(photo, quality=95)
    pillow_heif.from_pillow(Image.open(CROP).convert("RGB")).save(crop, quality=95)
    code, results = predict_json(capsys, str(tmp_path))  # a folder: .heic and .HEIF are images
    assert code == 0
    by_name = {Path(r["path"]).name: r for r in results}
    assert len(by_name["face.heic"]["faces"]) == 1
    _, jpeg = predict_json(capsys, str(PHOTO))
    assert abs(by_name["face.heic"]["faces"][0]["age"] - jpeg[0]["faces"][0]["age"]) < 5
    code, aligned = predict_json(capsys, "--aligned", str(crop))
    assert code == 0 and aligned[0]["faces"][0]["box"] == [0, 0, 200, 200]


# -- the digest cache -------------------------------------------------------------------------------------------
def test_digest_is_reused_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"weights" * 1000)
    calls = []
    real = modelio.file_sha256
    monkeypatch.setattr(modelio, "file_sha256", lambda p: calls.append(p) or real(p))
    first = modelio.cached_sha256(path)
    assert modelio.cached_sha256(path) == first and len(calls) == 1
    path.write_bytes(b"other weights" * 1000)
    assert modelio.cached_sha256(path) == real(path) != first and len(calls) == 2


def test_digest_is_computed_when_it_cannot_be_recorded(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"weights")
    modelio.hash_record_path(path).parent.write_text("a file where the cache folder would be")
    assert modelio.cached_sha256(path) == modelio.file_sha256(path)


# -- the detector's files ---------------------------------------------------------------------------------------
def test_blazeface_files_ship_with_the_package():
    from agegender.serving.faces import BLAZEFACE_DIR

    readme = (BLAZEFACE_DIR / "README.md").read_text()
    for path in sorted(BLAZEFACE_DIR.glob("*.tflite")):
        assert f"`{path.name}`" in readme and modelio.file_sha256(path) in readme
    assert {p.name for p in BLAZEFACE_DIR.glob("*.tflite")} == {"face_detection_full_range.tflite",
                                                                 "face_detection_short_range.tflite"}


def test_detector_runs_on_litert_when_installed():
    if not HAS_LITERT:
        pytest.skip("LiteRT (ai-edge-litert) not installed")
    from ai_edge_litert.interpreter import Interpreter

    from agegender.serving.faces import load_detector

    detector = load_detector()
    assert isinstance(detector._interpreter, Interpreter)
    assert len(detector.detect(np.asarray(Image.open(PHOTO).convert("RGB")))) == 1
