"""Streamlit app: age and gender of every face in photos, webcam snapshots and live video.

Run with ``streamlit run src/agegender/app.py`` (``make app``).

The page is built by :func:`main`, which runs only when Streamlit executes this file
as a script. Everything that can be tested without Streamlit (decoding an upload,
predicting, the table of persons, the model list, encoding the download) is in plain
functions above it, so ``import agegender.app`` needs no running server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from agegender.config import MODELS_DIR, default_model_path
from agegender.data.images import ImageError, open_image
from agegender.serving.annotate import annotate
from agegender.serving.modelio import ModelFileError, list_models, read_card

# -- configuration ----------------------------------------------------------------------------
#: Largest upload accepted, per file (also given to the uploader, which refuses bigger files).
MAX_UPLOAD_MB = 10
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif"]
#: ICE servers for the live mode. None by default: the browser and the server connect
#: directly (same machine or same network), and nothing is sent to outside STUN servers.
#: For a server behind NAT, set AGEGENDER_ICE_SERVERS to a JSON list, e.g.
#: '[{"urls": ["stun:stun.example.org:3478"]}]' or a TURN server with credentials.
RTC_CONFIGURATION: dict[str, Any] = {"iceServers": []}
LIVE_SIZE = (640, 480)
MODES = ("Upload photos", "Webcam snapshot", "Live webcam")


def rtc_configuration() -> dict[str, Any]:
    """:data:`RTC_CONFIGURATION`, or the ICE servers given in ``$AGEGENDER_ICE_SERVERS``."""
    env = os.environ.get("AGEGENDER_ICE_SERVERS", "").strip()
    if not env:
        return dict(RTC_CONFIGURATION)
    servers = json.loads(env)
    if not isinstance(servers, list):
        raise ValueError("AGEGENDER_ICE_SERVERS must be a JSON list of ICE servers")
    return {"iceServers": servers}


# -- logic without Streamlit ------------------------------------------------------------------
@dataclass
class Analysis:
    """What the app shows for one image."""

    name: str
    image: Image.Image | None = None
    faces: list = field(default_factory=list)  # FacePrediction, left to right
    error: str | None = None
    _encoded: dict = field(default_factory=dict, repr=False)

    @property
    def annotated(self) -> Image.Image | None:
        if self.image is None:
            return None
        if "annotated" not in self._encoded:
            self._encoded["annotated"] = annotate(self.image, self.faces) if self.faces else self.image
        return self._encoded["annotated"]

    @property
    def message(self) -> str | None:
        """The error, or the note that there is no face, for a person to read."""
        if self.error:
            return self.error
        if not self.faces:
            return (f"No face found in {self.name}. Faces should be at least about 40 pixels wide, "
                    f"seen from the front and well lit.")
        return None

    def table(self) -> list[dict[str, Any]]:
        return persons_table(self.faces)

    def download(self, fmt: str) -> bytes:
        """The annotated image as PNG or JPEG bytes (encoded once)."""
        fmt = fmt.upper()
        if fmt not in self._encoded:
            self._encoded[fmt] = encode_image(self.annotated, fmt)
        return self._encoded[fmt]

    def download_name(self, fmt: str) -> str:
        suffix = {"PNG": "png", "JPEG": "jpg"}[fmt.upper()]
        return f"{Path(self.name).stem or 'image'}_annotated.{suffix}"


def left_to_right(faces: Sequence) -> list:
    return sorted(faces, key=lambda face: (face.box[0], face.box[1]))


def analyse_upload(predictor, data: bytes, name: str = "image", *,
                   max_bytes: int = MAX_UPLOAD_BYTES) -> Analysis:
    """Decode ``data`` and predict every face in it; never raises.

    Too large, empty, non-image, corrupt and oversized (decompression bomb) inputs
    and any failure of the model come back as ``Analysis.error``.
    """
    if len(data) > max_bytes:
        return Analysis(name, error=f"{name} is too large: {len(data) / 2 ** 20:.1f} MB; "
                                    f"the limit is {max_bytes / 2 ** 20:.0f} MB per file.")
    try:
        image = open_image(bytes(data))
    except ImageError as exc:
        message = str(exc).replace("<bytes>", name, 1)
        return Analysis(name, error=f"Cannot use {name}: {message.split(': ', 1)[-1]}")
    except Exception as exc:  # pragma: no cover - open_image turns known failures into ImageError
        return Analysis(name, error=f"Cannot read {name}: {type(exc).__name__}: {exc}")
    try:
        faces = left_to_right(predictor.predict_image(image))
    except Exception as exc:
        return Analysis(name, image=image, error=f"Could not analyse {name}: {type(exc).__name__}: {exc}")
    return Analysis(name, image=image, faces=faces)


def persons_table(faces: Sequence) -> list[dict[str, Any]]:
    """One row per face, numbered left to right as in the annotated image."""
    rows = []
    for number, face in enumerate(left_to_right(faces), start=1):
        x, y, w, h = (int(v) for v in face.box)
        rows.append({"person": number, "age": f"{face.age:.1f}",
                     "age range": f"{face.age_low:.0f}-{face.age_high:.0f}",
                     "gender": face.gender, "probability": f"{100 * face.gender_probability:.0f}%",
                     "box (x, y, w, h)": f"{x}, {y}, {w}, {h}"})
    return rows


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    if fmt.upper() == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def describe_card(card: dict) -> dict[str, str]:
    """A model card's headline facts: test metrics and input."""
    test = card.get("metrics", {}).get("test", {})
    spec = card.get("input", {})
    facts = {
        "test age MAE": f"{test['age_mae']:.2f} years" if "age_mae" in test else "n/a",
        "test gender accuracy": f"{100 * test['gender_accuracy']:.1f} %" if "gender_accuracy" in test else "n/a",
        "input": f"{spec.get('image_size', '?')} px {spec.get('color_mode', '?')}",
    }
    if card.get("architecture"):
        facts["architecture"] = str(card["architecture"])
    if card.get("created"):
        facts["trained"] = str(card["created"])[:16].replace("T", " ")
    return facts


def describe_serving(model, card: dict) -> str:
    """What actually answers: the TFLite export (only loaded when it matches the Keras file) or the Keras model."""
    from agegender.serving.litert import TFLiteModel

    if isinstance(model, TFLiteModel):
        lite = card.get("tflite", {})
        return f"TFLite {lite.get('quantization', '')} export, {model.path.stat().st_size / 2**20:.1f} MB".replace("  ", " ")
    return "Keras model"


def model_label(path: Path, card: dict) -> str:
    facts = describe_card(card)
    return (f"{Path(path).stem} — age MAE {facts['test age MAE']}, gender {facts['test gender accuracy']}, "
            f"{facts['input']}")


def model_options(folder: str | os.PathLike = MODELS_DIR) -> list[tuple[Path, dict]]:
    """Models with cards in ``folder`` plus the default model; the default first."""
    options = list_models(folder) if Path(folder).is_dir() else []
    default = Path(default_model_path())
    resolved = {p.resolve(): i for i, (p, _) in enumerate(options)}
    if default.is_file():
        if default.resolve() in resolved:
            options.insert(0, options.pop(resolved[default.resolve()]))
        else:
            try:
                options.insert(0, (default, read_card(default)))
            except ModelFileError:
                pass
    return options


class SessionCache:
    """Analyses of the session's uploads, by model and content, so reruns do not predict again."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._items: dict[tuple, Analysis] = {}

    def get(self, predictor, model_key: str, data: bytes, name: str) -> Analysis:
        key = (model_key, name, len(data), hashlib.sha1(data).hexdigest())
        if key not in self._items:
            if len(self._items) >= self.max_entries:
                self._items.pop(next(iter(self._items)))
            self._items[key] = analyse_upload(predictor, data, name)
        return self._items[key]


# -- the page -------------------------------------------------------------------------------------
def main() -> None:  # pragma: no cover - exercised by AppTest and the browser tests
    import pandas as pd
    import streamlit as st

    from agegender.serving.predict import Predictor

    st.set_page_config(page_title="Age and gender", page_icon="🙂", layout="wide")

    # Loaded once per process and shared by all sessions. Photos and live video use
    # differently tuned detectors (see agegender.serving.live.LIVE_DETECTOR) around the same model.
    @st.cache_resource(show_spinner="Loading the face detector…")
    def get_detector(kind: str):
        from agegender.serving.faces import load_detector
        from agegender.serving.live import load_live_detector

        return load_live_detector() if kind == "live" else load_detector()

    @st.cache_resource(show_spinner="Loading the model…")
    def get_model(path: str):
        from agegender.serving.modelio import load_serving_model

        return load_serving_model(path)

    def get_predictor(path: str, kind: str = "photo") -> Predictor:
        model, card = get_model(path)
        if kind == "live":
            from agegender.serving.live import live_predictor

            return live_predictor(model, card, path, detector=get_detector("live"))
        return Predictor(model, card, detector=get_detector(kind), path=path)

    @st.cache_resource
    def get_lock(path: str) -> threading.Lock:
        return threading.Lock()

    st.title("Age and gender estimation")

    # model chooser
    options = model_options()
    with st.sidebar:
        st.header("Model")
        if not options:
            st.error(f"No model found: {default_model_path()} does not exist and {MODELS_DIR} has no "
                     f"model with a card. Train one with `agegender train` or set AGEGENDER_MODEL.")
            st.stop()
        index = st.selectbox("Model", range(len(options)), format_func=lambda i: model_label(*options[i]),
                             key="model", label_visibility="collapsed")
        path, card = options[index]
        st.table(pd.DataFrame(describe_card(card).items(), columns=["", "value"]).set_index(""))
        st.caption(f"`{path}`")
    try:
        predictor = get_predictor(str(path))
    except Exception as exc:
        st.error(f"Cannot load the model {path}: {exc}")
        st.stop()
    with st.sidebar:
        st.caption(f"Serving: {describe_serving(predictor.model, predictor.card)}")
    lock = get_lock(str(path))

    cache = st.session_state.setdefault("analyses", SessionCache())

    def analyse(data: bytes, name: str) -> Analysis:
        with lock:
            return cache.get(predictor, str(path), data, name)

    def show(result: Analysis, key: str) -> None:
        st.subheader(result.name)
        if result.error:
            st.error(result.error)
            return
        if not result.faces:
            st.warning(result.message)
            st.image(result.image, caption=f"{result.name} (no face found)")
            return
        left, right = st.columns([3, 2])
        with left:
            st.image(result.annotated, caption=f"{result.name}: {len(result.faces)} "
                                               f"face{'s' if len(result.faces) > 1 else ''}")
        with right:
            st.table(pd.DataFrame(result.table()), hide_index=True)
            for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
                st.download_button(f"Download annotated {fmt}", data=result.download(fmt),
                                   file_name=result.download_name(fmt), mime=mime,
                                   key=f"download-{fmt}-{key}", on_click="ignore")

    mode = st.radio("Mode", MODES, horizontal=True, key="mode", label_visibility="collapsed")

    if mode == MODES[0]:
        uploads = st.file_uploader(f"Photos (JPEG, PNG or WebP, up to {MAX_UPLOAD_MB} MB each)",
                                   type=UPLOAD_TYPES, accept_multiple_files=True,
                                   max_upload_size=MAX_UPLOAD_MB, key="uploads")
        if not uploads:
            st.info("Upload one or more photos: every face in them gets a box, an age with its range "
                    "and a gender with its probability.")
        for number, upload in enumerate(uploads or []):
            if upload.size > MAX_UPLOAD_BYTES:  # checked before reading the bytes
                st.subheader(upload.name)
                st.error(f"{upload.name} is too large: {upload.size / 2 ** 20:.1f} MB; "
                         f"the limit is {MAX_UPLOAD_MB} MB per file.")
                continue
            show(analyse(upload.getvalue(), upload.name), f"upload-{number}")

    elif mode == MODES[1]:
        photo = st.camera_input("Take a photo", key="snapshot")
        if photo is not None:
            show(analyse(photo.getvalue(), "snapshot.jpg"), "snapshot")

    else:
        try:
            live_predictor = get_predictor(str(path), "live")
        except Exception as exc:
            st.error(f"Cannot load the live face detector: {exc}")
            st.stop()
        live_page(st, live_predictor, str(path), lock)


def live_page(st, predictor, model_key: str, lock: threading.Lock) -> None:  # pragma: no cover
    """Live webcam through WebRTC: frames go to the server, come back annotated."""
    import time

    import pandas as pd

    from agegender.serving.live import FaceTracker, LiveAnnotator, preload_srtp

    preload_srtp()  # before aiortc: see its docstring (TensorFlow + pylibsrtp crash)
    try:
        import av
        from streamlit_webrtc import WebRtcMode, webrtc_streamer
    except ImportError as exc:
        st.error(f"The live mode needs streamlit-webrtc ({exc}). Use the snapshot mode instead.")
        return

    col1, col2 = st.columns(2)
    method = col1.radio("Smoothing", ("ema", "median"), horizontal=True, key="smoothing",
                        format_func={"ema": "moving average", "median": "median"}.get)
    frames = col2.slider("Frames smoothed over", 2, 30, 10, key="smoothing_frames")
    annotators = st.session_state.setdefault("live_annotators", {})
    if model_key not in annotators:
        annotators[model_key] = LiveAnnotator(predictor, FaceTracker(), lock)
    annotator = annotators[model_key]
    # an EMA with the same centre of mass as a mean over the last N frames
    annotator.tracker.configure(method=method, window=frames, alpha=2.0 / (frames + 1))

    def callback(frame):
        out = annotator.process(frame.to_ndarray(format="rgb24"))
        return av.VideoFrame.from_ndarray(out, format="rgb24")

    try:
        config = rtc_configuration()
    except ValueError as exc:
        st.error(str(exc))
        return
    video, table = st.columns([3, 2])
    with video:
        ctx = webrtc_streamer(
            key="live", mode=WebRtcMode.SENDRECV, rtc_configuration=config,
            media_stream_constraints={"video": {"width": LIVE_SIZE[0], "height": LIVE_SIZE[1]}, "audio": False},
            video_frame_callback=callback, async_processing=True)
        if not config["iceServers"]:
            st.caption("No STUN/TURN server is configured: the browser must reach this server directly "
                       "(same machine or network). Set AGEGENDER_ICE_SERVERS for other setups.")
    placeholder = table.empty()
    while ctx.state.playing:
        faces = annotator.tracker.current
        with placeholder.container():
            if annotator.last_error:
                st.error(f"Live prediction failed: {annotator.last_error}")
            elif faces:
                st.table(pd.DataFrame(persons_table(faces)), hide_index=True)
            else:
                st.info(f"No face in view ({annotator.frames} frames analysed).")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
