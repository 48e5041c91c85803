"""The Streamlit app (through Streamlit's AppTest) and the live tracker.

AppTest runs ``src/agegender/app.py`` in this process with simulated widgets:
``file_uploader.set_value`` and ``camera_input.set_value`` deliver the bytes just as
a browser upload would (size limits in the browser are the browser tests' business).
The tracker tests and the tests of the app's plain functions need no model.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.serving.live import FaceTracker, LiveAnnotator, TrackedFace, iou, p_female_of
from agegender.serving.predict import FacePrediction

from conftest import calibrated_model_copy, corrupt_jpeg, jpeg_bytes, png_declaring

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "src" / "agegender" / "app.py"
ASSETS = Path(__file__).resolve().parent / "assets"
WILD = Path(os.environ.get("WILD_SAMPLES_DIR", REPO.parent / "shared" / "datasets" / "wild_samples"))


# -- inputs -----------------------------------------------------------------------------------------
def face_photo() -> Path:
    """A real photo with one face: from shared/ when present, else the committed asset."""
    shared = WILD / "known_persons" / "fr_obama.jpg"
    return shared if shared.is_file() else ASSETS / "face.jpg"


def group_photo() -> tuple[Path, int]:
    """A photo with several faces and how many there are."""
    shared = WILD / "group_photos" / "fr_kit_with_rose.jpg"
    return (shared, 2) if shared.is_file() else (ASSETS / "group3.jpg", 3)


def no_face_jpeg() -> bytes:
    """A smooth colour gradient: an image, but nothing like a face."""
    x = np.linspace(0, 255, 320, dtype=np.float32)
    y = np.linspace(0, 255, 240, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x[None, :] + y) / 2], axis=-1).astype(np.uint8)
    return jpeg_bytes(Image.fromarray(rgb), quality=90)


def fp(age=30.0, p_female=0.2, box=(10, 10, 50, 50), spread=5.0) -> FacePrediction:
    female = p_female >= 0.5
    return FacePrediction(age=age, age_low=age - spread, age_high=age + spread,
                          gender="female" if female else "male",
                          gender_probability=p_female if female else 1 - p_female, box=list(box))


# -- the live tracker -------------------------------------------------------------------------------
def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0


def test_tracker_keeps_identities_and_smooths_jitter():
    rng = np.random.default_rng(0)
    tracker = FaceTracker(method="ema", alpha=0.2)
    raw, smooth = [], []
    for frame in range(60):
        dx = int(rng.integers(-3, 4))
        left = fp(age=30 + rng.normal(0, 4), p_female=0.8 + rng.normal(0, 0.05), box=(100 + dx, 50, 80, 80))
        right = fp(age=60 + rng.normal(0, 4), p_female=0.1, box=(400 - dx, 60, 90, 90))
        out = tracker.update([left, right])
        assert [t.track_id for t in out] == [1, 2], f"identities changed at frame {frame}"
        raw.append(left.age)
        smooth.append(out[0].age)
    assert np.std(np.diff(smooth[10:])) < 0.5 * np.std(np.diff(raw[10:]))
    assert abs(np.mean(smooth[10:]) - 30) < 3
    assert out[0].gender == "female" and out[1].gender == "male"
    assert out[0].frames == 60
    assert all(isinstance(t, TrackedFace) for t in out)


def test_tracker_matches_by_overlap_not_by_order():
    tracker = FaceTracker()
    first = tracker.update([fp(age=20, box=(0, 0, 50, 50)), fp(age=70, box=(300, 0, 50, 50))])
    swapped = tracker.update([fp(age=70, box=(302, 1, 50, 50)), fp(age=20, box=(1, 2, 50, 50))])
    assert [t.track_id for t in swapped] == [first[1].track_id, first[0].track_id]
    assert [round(t.age) for t in swapped] == [70, 20]


def test_tracker_gender_does_not_flip_on_one_noisy_frame():
    tracker = FaceTracker(method="ema", alpha=0.3)
    for _ in range(10):
        tracker.update([fp(p_female=0.9)])
    out = tracker.update([fp(p_female=0.3)])  # one frame says "male"
    assert out[0].gender == "female"
    assert out[0].gender_probability == pytest.approx(0.3 * 0.3 + 0.7 * 0.9)
    assert p_female_of(out[0]) == pytest.approx(0.72)


def test_tracker_median_ignores_an_outlier():
    tracker = FaceTracker(method="median", window=5)
    for _ in range(4):
        tracker.update([fp(age=40)])
    out = tracker.update([fp(age=90)])
    assert out[0].age == 40
    assert out[0].age_low <= out[0].age <= out[0].age_high


def test_tracker_forgets_lost_faces_and_starts_new_tracks():
    tracker = FaceTracker(max_missed=2)
    (a,) = tracker.update([fp(box=(0, 0, 40, 40))])
    for _ in range(2):
        assert tracker.update([]) == []
    (again,) = tracker.update([fp(box=(0, 0, 40, 40))])
    assert again.track_id == a.track_id  # missed 2 frames: still known
    for _ in range(3):
        tracker.update([])
    (new,) = tracker.update([fp(box=(0, 0, 40, 40))])
    assert new.track_id != a.track_id and new.frames == 1
    (far,) = tracker.update([fp(box=(500, 500, 40, 40))])  # no overlap: someone else
    assert far.track_id not in (a.track_id, new.track_id)
    tracker.reset()
    assert tracker.update([fp()])[0].track_id == 1 and len(tracker.current) == 1


def test_tracker_configure_while_running():
    tracker = FaceTracker(method="median", window=5)
    for age in (10, 20, 30, 40, 50):
        tracker.update([fp(age=age)])
    tracker.configure(window=2)
    assert tracker.update([fp(age=60)])[0].age == 55  # median of the last 2 frames
    tracker.configure(method="ema", alpha=1.0)
    assert tracker.update([fp(age=70)])[0].age == 70
    with pytest.raises(ValueError):
        tracker.configure(method="mode")
    assert tracker.method == "ema"


def test_tracker_validates_settings():
    with pytest.raises(ValueError):
        FaceTracker(method="mean")
    with pytest.raises(ValueError):
        FaceTracker(alpha=0)
    with pytest.raises(ValueError):
        FaceTracker(window=0)


class FakePredictor:
    def __init__(self, faces=None, error=None):
        self.faces, self.error, self.calls = faces or [], error, 0

    def predict_image(self, image, aligned=False):
        self.calls += 1
        if self.error:
            raise self.error
        return list(self.faces)


def test_live_annotator_draws_smoothed_faces_and_survives_errors():
    frame = np.full((240, 320, 3), 100, np.uint8)
    predictor = FakePredictor([fp(box=(200, 50, 60, 60)), fp(age=50, box=(20, 40, 60, 60), p_female=0.9)])
    annotator = LiveAnnotator(predictor, FaceTracker(), threading.Lock())
    out = annotator.process(frame)
    assert out.shape == frame.shape and not np.array_equal(out, frame)  # boxes drawn
    current = annotator.tracker.current
    assert [f.box[0] for f in current] == [20, 200]  # left to right
    assert annotator.frames == 1 and annotator.last_error is None

    annotator.predictor = FakePredictor(error=RuntimeError("boom"))
    same = annotator.process(frame)
    assert np.array_equal(same, frame) and "boom" in annotator.last_error

    annotator.predictor = FakePredictor([])
    assert np.array_equal(annotator.process(frame), frame) and annotator.last_error is None


def test_live_detector_finds_the_face_in_a_webcam_frame():
    from agegender.serving.live import LIVE_DETECTOR, load_live_detector

    detector = load_live_detector()
    assert detector.tiles is False and LIVE_DETECTOR["name"] == "blazeface"
    photo = Image.open(ASSETS / "face.jpg").convert("RGB")
    frame = Image.new("RGB", (640, 480), (128, 128, 128))
    frame.paste(photo, (120, 90))
    (face,) = detector.detect(np.asarray(frame))
    x, y, w, h = face.box
    assert 120 < x + w / 2 < 520 and 90 < y + h / 2 < 390 and w > 80
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_live_predictor_shares_the_model_without_test_time_views():
    from agegender.serving.live import live_predictor

    model, detector = object(), object()
    card = {"input": {"image_size": 64, "color_mode": "grayscale"}, "tta_flip": True, "tta_zoom": [0.9]}
    predictor = live_predictor(model, card, "m.keras", detector=detector)
    assert predictor.model is model and predictor.detector is detector
    assert predictor.views == {"tta_flip": False, "tta_zoom": ()}


@pytest.mark.slow
def test_srtp_works_after_tensorflow(tmp_path):
    """aiortc's SRTP (pylibsrtp) crashes a process that imported TensorFlow first, unless preloaded."""
    if importlib.util.find_spec("pylibsrtp") is None:  # importing it here would be the crash itself
        pytest.skip("pylibsrtp (aiortc) is not installed")
    script = tmp_path / "srtp.py"
    script.write_text(textwrap.dedent("""
        import tensorflow
        from agegender.serving.live import preload_srtp
        preload_srtp()
        import aiortc, streamlit_webrtc  # noqa: F401
        from pylibsrtp import Policy, Session
        key = bytes(range(30))
        tx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        rx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        rtp = bytes.fromhex("8008000100000001deadbeef") + b"payload" * 20
        assert rx.unprotect(tx.protect(rtp)) == rtp
        print("srtp ok")
    """))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "srtp ok" in done.stdout, (done.returncode, done.stderr[-2000:])


# -- the app's plain functions ----------------------------------------------------------------------
def test_analyse_upload_reports_every_bad_input():
    from agegender.app import MAX_UPLOAD_BYTES, analyse_upload

    real = face_photo().read_bytes()
    predictor = FakePredictor([fp()])
    cases = {
        "text.jpg": (b"This is not a picture, just text saved with a .jpg name.\n" * 5, "not an image"),
        "empty.jpg": (b"", "empty"),
        "corrupt.jpg": (corrupt_jpeg(jpeg_bytes(Image.open(io.BytesIO(real)).convert("RGB"))), "corrupt"),
        "truncated.jpg": (real[: len(real) // 3], "truncated"),
        "bomb.png": (png_declaring(20000, 20000), "too many pixels"),
        "huge.jpg": (real + b"\0" * MAX_UPLOAD_BYTES, "too large"),
    }
    for name, (data, expected) in cases.items():
        result = analyse_upload(predictor, data, name)
        assert result.error and expected in result.error.lower(), (name, result.error)
        assert name in result.error and result.faces == []
        assert "DOS" not in result.error and "<bytes>" not in result.error  # no library wording
    assert predictor.calls == 0  # bad inputs never reach the model

    broken = analyse_upload(FakePredictor(error=RuntimeError("model exploded")), real, "x.jpg")
    assert "went wrong while analysing x.jpg" in broken.error and "model exploded" in broken.detail

    none = analyse_upload(FakePredictor([]), no_face_jpeg(), "sky.jpg")
    assert none.error is None and none.faces == [] and "No face found in sky.jpg" in none.message


def test_analysis_table_download_and_order():
    from agegender.app import analyse_upload

    faces = [fp(age=61.2, box=(300, 20, 80, 80), p_female=0.1), fp(age=25, box=(10, 30, 70, 70), p_female=0.97)]
    result = analyse_upload(FakePredictor(faces), face_photo().read_bytes(), "holiday photo.jpg")
    assert result.error is None and result.message is None
    rows = result.table()
    assert [r["person"] for r in rows] == [1, 2]
    assert rows[0]["gender"] == "female" and rows[0]["confidence"] == "97 %" and rows[0]["age range"] == "20-30"
    assert rows[1]["age"] == "61" and rows[1]["age (model)"] == "61.2"
    assert rows[1]["box (x, y, w, h)"] == "300, 20, 80, 80" and rows[1]["P(female), model"] == "0.1000"
    png, jpeg = result.download("PNG"), result.download("JPEG")
    assert png.startswith(b"\x89PNG") and jpeg.startswith(b"\xff\xd8")
    annotated = Image.open(io.BytesIO(png))
    assert annotated.width == result.image.width and annotated.height > result.image.height  # a legend below
    assert result.download_name("JPEG") == "holiday photo_annotated.jpg"
    crop = np.asarray(annotated)[: result.image.height]
    assert not np.array_equal(crop, np.asarray(result.image))
    figure, table = result.figure_html(), result.table_html()
    assert figure.count('class="ag-marker"') == 2 and table.count("<tr data-face=") == 2
    assert 'title="1: 25 (20-30), female, 97 %"' in figure  # the marker's words are the table's


def test_downloads_are_made_only_when_asked_for(monkeypatch):
    from agegender import app

    made = []
    monkeypatch.setattr(app, "encode_image", lambda image, fmt="PNG": made.append(fmt) or b"x")
    result = app.analyse_upload(FakePredictor([fp()]), face_photo().read_bytes(), "a.jpg")
    result.figure_html(), result.table_html(), result.table()
    assert made == []
    assert result.download("png") == b"x" and result.download("PNG") == b"x" and made == ["PNG"]


def test_large_photos_are_shrunk_before_the_model_sees_them():
    from agegender.app import MAX_SIDE, analyse_upload

    class Recorder(FakePredictor):
        def predict_image(self, image, aligned=False):
            self.size = image.size
            return super().predict_image(image, aligned)

    big = Image.open(face_photo()).convert("RGB").resize((4000, 3000))
    steps = []
    recorder = Recorder([fp(box=(100, 100, 200, 200))])
    result = analyse_upload(recorder, jpeg_bytes(big, quality=80), "big.jpg",
                            progress=lambda share, words: steps.append(share))
    assert recorder.size == (MAX_SIDE, 1536) and result.image.size == (MAX_SIDE, 1536)
    assert result.original_size == (4000, 3000)
    assert steps == sorted(steps) and steps[-1] == 1.0 and len(steps) >= 3


def test_heic_without_pillow_heif_gets_a_plain_message(monkeypatch):
    from agegender import app

    monkeypatch.setattr(app, "_HEIF_REGISTERED", False)
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    assert app.is_heif(heic) and not app.is_heif(b"\xff\xd8\xff\xe0" + bytes(20))
    result = app.analyse_upload(FakePredictor([fp()]), heic, "IMG_0001.HEIC")
    assert "IMG_0001.HEIC is a HEIC photo" in result.error and "JPEG" in result.error


def test_table_and_labels_round_ages_the_same_way():
    from agegender.app import persons_table
    from agegender.serving.annotate import label
    from agegender.serving.display import face_texts, round_years, table_rows

    faces = [fp(age=28.6, spread=4.5, box=(0, 0, 10, 10)), fp(age=28.5, spread=5.5, box=(20, 0, 10, 10)),
             fp(age=29.5, box=(40, 0, 10, 10))]
    texts = face_texts(faces)
    assert [t.age for t in texts] == ["29", "29", "30"]  # halves up, never Python's round-half-even
    assert [r["age"] for r in table_rows(texts)] == [r["age"] for r in persons_table(faces)] == ["29", "29", "30"]
    assert [label(f).split(" ")[0] for f in faces] == ["29", "29", "30"]
    assert texts[0].age_range == "24-33" and round_years(2.5) == 3 and round_years(-0.4) == 0


def test_uncertain_gender_below_the_cards_threshold():
    from agegender.app import persons_table
    from agegender.serving.display import face_text
    from agegender.serving.gender_confidence import GenderConfidence

    gender = GenderConfidence.from_card({"gender_confidence": {"a": 0.8, "b": 0.0, "threshold": 0.8}})
    child, adult = fp(age=4, p_female=0.6), fp(age=30, p_female=0.999)
    assert face_text(child, gender).gender_text.startswith("uncertain (leans female, ")
    assert face_text(adult, gender).gender == "female" and face_text(adult, gender).confidence == ">99 %"
    rows = persons_table([child], gender)
    assert rows[0]["gender"] == "uncertain (leans female)"
    assert face_text(child).gender == "female"  # without a calibration in the card: the model's own call


def test_markers_never_overlap():
    from agegender.serving.display import marker_share, place_markers

    def rects(boxes, width, height):
        side = marker_share(len(boxes)) * width
        return [(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
                for x, y in place_markers(boxes, width, height)], side

    def disjoint(rs):
        return all(not (a[0] < b[2] - 1e-6 and b[0] < a[2] - 1e-6 and a[1] < b[3] - 1e-6 and b[1] < a[3] - 1e-6)
                   for i, a in enumerate(rs) for b in rs[i + 1:])

    six_in_a_row = [(20 + i * 105, 200, 100, 100) for i in range(6)]  # touching faces, as in a team photo
    rs, side = rects(six_in_a_row, 660, 400)
    assert disjoint(rs) and all(0 <= r[0] and r[2] <= 660 and 0 <= r[1] and r[3] <= 400 for r in rs)
    assert all(r[3] <= 200 for r in rs)  # room above every face: each marker sits above its face
    rng = np.random.default_rng(0)
    for _ in range(50):
        count = int(rng.integers(1, 25))
        boxes = [(int(rng.integers(0, 900)), int(rng.integers(0, 500)), int(s), int(s))
                 for s in rng.integers(20, 120, count)]
        rs, _ = rects(boxes, 1000, 600)
        assert disjoint(rs), boxes


def test_model_options_and_card_description(tmp_path, monkeypatch):
    import json

    from agegender.app import describe_card, model_label, model_options

    card = {"created": "2025-01-02T03:04:05+00:00", "architecture": "seed_cnn",
            "input": {"image_size": 128, "color_mode": "grayscale"},
            "metrics": {"test": {"age_mae": 6.234, "gender_accuracy": 0.8812}}}
    for name, created in (("old", "2024"), ("new", "2025"), ("chosen", "2023")):
        (tmp_path / f"{name}.keras").write_bytes(b"zip")
        (tmp_path / f"{name}.json").write_text(json.dumps({**card, "created": created}))
    (tmp_path / "nocard.keras").write_bytes(b"zip")
    monkeypatch.setenv("AGEGENDER_MODEL", str(tmp_path / "chosen.keras"))
    assert [p.stem for p, _ in model_options(tmp_path)] == ["chosen", "new", "old"]
    monkeypatch.setenv("AGEGENDER_MODEL", str(tmp_path / "missing.keras"))
    assert [p.stem for p, _ in model_options(tmp_path)] == ["new", "old", "chosen"]  # newest first
    facts = describe_card(card)
    assert facts["test age MAE"] == "6.23 years" and facts["test gender accuracy"] == "88.1 %"
    assert facts["input"] == "128 px grayscale"
    assert describe_card({})["test age MAE"] == "n/a"
    from agegender.app import model_summary

    monkeypatch.setenv("AGEGENDER_MODEL", str(tmp_path / "chosen.keras"))
    assert model_label(tmp_path / "chosen.keras", card) == "chosen (recommended)"
    assert model_label(tmp_path / "old.keras", card) == "old (classic baseline, less accurate)"  # a seed CNN
    assert model_label(tmp_path / "new.keras", {**card, "architecture": "agenet"}) == "new"
    assert model_summary(tmp_path / "chosen.keras", card).startswith("**Recommended:**")
    assert "less accurate" in model_summary(tmp_path / "old.keras", card)
    assert "off by 6.2 years" in model_summary(tmp_path / "old.keras", card)


@pytest.mark.slow
def test_serving_line_names_what_answers(tiny_model, tmp_path):
    from agegender.app import describe_serving
    from agegender.serving.litert import TFLiteModel
    from agegender.serving.modelio import load_model

    keras_model, card = load_model(tiny_model.path)
    assert describe_serving(keras_model, {**card, "tflite": {"quantization": "float16"}}) == "Keras model"
    from agegender.serving.export import convert

    lite_path = tmp_path / "tiny.tflite"
    lite_path.write_bytes(convert(keras_model))
    line = describe_serving(TFLiteModel(lite_path), {**card, "tflite": {"quantization": "float16"}})
    assert line.startswith("TFLite float16 export,") and line.endswith(" MB")


def test_rtc_configuration_has_no_external_servers_by_default(monkeypatch):
    from agegender.app import rtc_configuration

    monkeypatch.delenv("AGEGENDER_ICE_SERVERS", raising=False)
    assert rtc_configuration() == {"iceServers": []}
    monkeypatch.setenv("AGEGENDER_ICE_SERVERS", '[{"urls": ["stun:127.0.0.1:3478"]}]')
    assert rtc_configuration()["iceServers"][0]["urls"] == ["stun:127.0.0.1:3478"]


# -- the app through AppTest ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app_model(request) -> Path:
    """The default model when there is one, else the session's tiny trained model."""
    from agegender.config import default_model_path

    path = default_model_path()
    if path.is_file():
        return path
    return request.getfixturevalue("tiny_model").path


@pytest.fixture
def app(app_model, monkeypatch, request):
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AGEGENDER_MODEL", str(app_model))
    # .streamlit/config.toml hides error details from the app's users; the tests read them
    previous = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", "full")
    request.addfinalizer(lambda: config.set_option("client.showErrorDetails", previous))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def examples() -> list:
    from agegender.app import list_examples

    return list_examples()


def upload(at, *files):
    at.file_uploader(key="uploads").set_value(list(files))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@pytest.mark.slow
def test_app_starts_with_model_chooser(app, app_model):
    assert app.title[0].value == "Age and gender estimation"
    chooser = app.sidebar.selectbox(key="model")
    assert chooser.format_func(chooser.options and 0).startswith(app_model.stem)
    assert "test age MAE" in app.sidebar.table[0].value.index
    assert app.radio(key="mode").options == ["Upload photos", "Webcam snapshot", "Live webcam"]
    assert not app.error


@pytest.mark.slow
def test_app_explains_itself_without_developer_details(app, app_model):
    captions = texts(app.main.caption)
    assert "apparent" in captions and "binary" in captions and "not stored" in captions
    shown = captions + texts(app.main.markdown) + texts(app.sidebar.markdown)
    assert str(app_model) not in shown and "TFLite" not in shown  # the file and the export: "advanced" only
    assert "Recommended" in texts(app.sidebar.markdown)
    advanced = [e for e in app.sidebar.expander if e.label == "Advanced"]
    assert advanced and str(app_model) in texts(advanced[0].caption)


def test_app_example_click(app):
    app.button(key="example-0").click().run()
    assert not app.exception and not app.error
    assert len(app.main.table[0].value) == 6  # six_faces.jpg
    app.button(key="example-1").click().run()  # another example replaces it
    assert len(app.main.table) == 1 and len(app.main.table[0].value) == 1


@pytest.mark.slow
def test_app_shows_uncertain_gender_for_a_child(app_model, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AGEGENDER_MODEL", str(calibrated_model_copy(app_model, tmp_path / "models")))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.button(key="example-1").click().run()  # "A child": a 3-year-old the model cannot tell
    assert not at.exception and not at.error
    assert "uncertain" in at.main.table[0].value.iloc[0]["gender"]
    assert "uncertain <span" in texts(at.main.html)
    assert "calibrated" in texts(at.main.caption)


@pytest.mark.slow
def test_app_upload_face_photo(app):
    photo = face_photo()
    upload(app, (photo.name, photo.read_bytes(), "image/jpeg"))
    assert not app.error and not app.warning, texts(app.error) + texts(app.warning)
    assert len(app.main.image) == len(examples())  # the example tiles; the photo itself is HTML
    table = app.main.table[0].value  # the "advanced" table: in an expander, closed by default
    assert len(table) == 1
    assert list(table.columns) == ["person", "age", "age range", "gender", "confidence", "age (model)",
                                   "P(female), model", "box (x, y, w, h)"]
    assert table.iloc[0]["gender"].split(" ")[0] in ("male", "female", "uncertain")
    labels = [b.label for b in app.main.download_button]
    assert labels == ["Download annotated JPEG", "Download annotated PNG"]
    shown = texts(app.main.html)
    assert 'class="ag-marker"' in shown and '<tr data-face="1">' in shown
    assert table.iloc[0]["age"] in shown and "box" not in texts(app.main.markdown)


def test_app_group_photo_table_left_to_right(app):
    photo, expected = group_photo()
    upload(app, (photo.name, photo.read_bytes(), "image/jpeg"))
    table = app.main.table[0].value
    assert len(table) == expected
    xs = [int(box.split(",")[0]) for box in table["box (x, y, w, h)"]]
    assert xs == sorted(xs)


def test_app_bad_uploads_give_clear_messages(app):
    from agegender.app import MAX_UPLOAD_BYTES

    real = face_photo().read_bytes()
    files = [
        ("notes.jpg", b"This is not a picture, just text saved with a .jpg name.\n" * 5, "image/jpeg"),
        ("corrupt.jpg", corrupt_jpeg(jpeg_bytes(Image.open(io.BytesIO(real)).convert("RGB"))), "image/jpeg"),
        ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (MAX_UPLOAD_BYTES + 1), "image/jpeg"),
        ("bomb.png", png_declaring(20000, 20000), "image/png"),
        ("sky.jpg", no_face_jpeg(), "image/jpeg"),
    ]
    upload(app, *files)
    errors = texts(app.main.error)
    assert "notes.jpg: not an image file" in errors
    assert "corrupt.jpg: corrupt or truncated image" in errors
    assert "huge.jpg is too large" in errors and f"limit is {MAX_UPLOAD_BYTES // 2 ** 20} MB" in errors
    assert "bomb.png has too many pixels" in errors and "DOS" not in errors
    assert len(app.main.error) == 4
    assert "No face found in sky.jpg" in texts(app.main.warning)
    assert len(app.main.image) == len(examples()) + 1  # the image without a face is still shown
    assert not app.main.table


@pytest.mark.slow
def test_app_good_and_bad_files_together(app):
    photo = face_photo()
    upload(app, ("notes.jpg", b"plain text", "image/jpeg"), (photo.name, photo.read_bytes(), "image/jpeg"))
    assert len(app.main.error) == 1 and len(app.main.table) == 1


def test_app_webcam_snapshot(app):
    app.radio(key="mode").set_value("Webcam snapshot").run()
    image = Image.open(face_photo()).convert("RGB")
    image.thumbnail((640, 480))
    app.camera_input(key="snapshot").set_value(("shot.jpg", jpeg_bytes(image, quality=90), "image/jpeg")).run()
    assert not app.exception and not app.error
    assert len(app.main.table[0].value) == 1


@pytest.mark.slow
def test_app_live_mode_renders(app):
    """The live page loads streamlit-webrtc next to TensorFlow (see preload_srtp) without crashing.

    AppTest has no real Streamlit runtime, and ``webrtc_streamer`` needs its session
    manager, so the component itself can only fail here; it is tested in the browser.
    """
    if importlib.util.find_spec("streamlit_webrtc") is None:  # not imported here: see preload_srtp
        pytest.skip("streamlit-webrtc is not installed")
    app.radio(key="mode").set_value("Live webcam").run()
    assert "streamlit_webrtc" in sys.modules and "pylibsrtp" in sys.modules
    assert app.radio(key="smoothing").value == "ema" and app.slider(key="smoothing_frames").value == 10
    unexpected = [e.value for e in app.exception if "_session_mgr" not in e.value]
    assert not unexpected and not app.error, (unexpected, texts(app.error))
