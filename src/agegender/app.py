"""Streamlit app: age and gender of every face in photos, webcam snapshots and live video.

Run with ``streamlit run src/agegender/app.py`` (``make app``) from the repository's root, so that
``.streamlit/config.toml`` (upload limit, toolbar) applies.

The page is built by :func:`main`, which runs only when Streamlit executes this file
as a script. Everything that can be tested without Streamlit (decoding an upload,
predicting, the words and tables shown, the model list, encoding the download) is in plain
functions above it, so ``import agegender.app`` needs no running server.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from agegender.config import MODELS_DIR, PROJECT_ROOT, default_model_path
from agegender.data.images import MAX_PIXELS, ImageError, open_image
from agegender.serving.annotate import annotate_numbered
from agegender.serving.display import FaceText, face_texts, figure_html, fit_within, table_html
from agegender.serving.gender_confidence import GenderConfidence
from agegender.serving.modelio import ModelFileError, list_models, read_card

# -- configuration ----------------------------------------------------------------------------
#: Largest upload accepted, per file. The uploader refuses bigger files in the browser (the same figure is
#: server.maxUploadSize in .streamlit/config.toml); :data:`UPLOAD_WATCH_HTML` puts its refusal into words.
MAX_UPLOAD_MB = 50
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif"]
FORMATS_TEXT = "JPEG, PNG, WebP or HEIC"
#: Photos are analysed and shown at most this many pixels on their longer side (the face detector searches
#: at most 1280; faces are cropped from this size). A 6000 px phone photo becomes 2048 px on arrival.
MAX_SIDE = 2048
#: ICE servers for the live mode. None by default: the browser and the server connect
#: directly (same machine or same network), and nothing is sent to outside STUN servers.
#: For a server behind NAT, set AGEGENDER_ICE_SERVERS to a JSON list, e.g.
#: '[{"urls": ["stun:stun.example.org:3478"]}]' or a TURN server with credentials.
RTC_CONFIGURATION: dict[str, Any] = {"iceServers": []}
LIVE_SIZE = (640, 480)
MODES = ("Upload photos", "Webcam snapshot", "Live webcam")
EXAMPLES_DIR = PROJECT_ROOT / "data" / "examples"
PRIVACY = ("🔒 **Privacy:** photos are processed on this server and not stored. They are kept in memory only "
           "while this page is open, never written to disk and never sent anywhere else.")
#: The first bytes of HEIC/HEIF files (an ISO media "ftyp" box and its brand).
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def rtc_configuration() -> dict[str, Any]:
    """:data:`RTC_CONFIGURATION`, or the ICE servers given in ``$AGEGENDER_ICE_SERVERS``."""
    env = os.environ.get("AGEGENDER_ICE_SERVERS", "").strip()
    if not env:
        return dict(RTC_CONFIGURATION)
    servers = json.loads(env)
    if not isinstance(servers, list):
        raise ValueError("AGEGENDER_ICE_SERVERS must be a JSON list of ICE servers")
    return {"iceServers": servers}


# -- reading an upload ------------------------------------------------------------------------
_HEIF_REGISTERED: bool | None = None


def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF photos when ``pillow_heif`` is installed (once); whether it can."""
    global _HEIF_REGISTERED
    if _HEIF_REGISTERED is None:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _HEIF_REGISTERED = True
        except Exception:  # not installed, or a build without its codec: HEIC uploads get a message
            _HEIF_REGISTERED = False
    return _HEIF_REGISTERED


def is_heif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


def megabytes(size: int) -> str:
    return f"{size / 2 ** 20:.1f} MB"


def too_large_message(name: str, size: int, limit_bytes: int = MAX_UPLOAD_BYTES) -> str:
    return (f"{name} is too large: {megabytes(size)}; the limit is {limit_bytes / 2 ** 20:.0f} MB per file. "
            f"Save a smaller copy (for example, export it as a JPEG) and add it again.")


def plain_error(name: str, message: str, data: bytes = b"") -> str:
    """An :class:`ImageError`'s message in words for someone who just chose a photo."""
    text = message.split(": ", 1)[-1] if message.startswith(("<bytes>", name)) else message
    if "empty file" in text:
        return f"{name} is an empty file (0 bytes). Choose the photo again; it may not have been saved completely."
    if "pixels" in text and ("limit" in text or "bomb" in text):
        size = re.search(r"(\d+)x(\d+) pixels", text)
        total = re.search(r"\((\d+) pixels\)", text)
        dims = (f" ({size.group(1)} × {size.group(2)} pixels)" if size
                else f" ({int(total.group(1)) / 1e6:,.0f} megapixels)" if total else "")
        return (f"{name} has too many pixels to analyse{dims}: the limit is {MAX_PIXELS / 1e6:.0f} megapixels. "
                f"Save a smaller copy and add it again.")
    if "not an image" in text:
        return f"{name}: not an image file. Choose a photo in {FORMATS_TEXT} format."
    if "corrupt or truncated" in text:
        return (f"{name}: corrupt or truncated image. It may not have finished copying or downloading; "
                f"save or export it again and add the new copy.")
    return f"Cannot use {name}: {text}"


@dataclass
class Analysis:
    """What the app shows for one image."""

    name: str
    image: Image.Image | None = None  # as analysed and shown: at most MAX_SIDE pixels on its longer side
    faces: list = field(default_factory=list)  # FacePrediction, left to right, boxes in ``image``'s pixels
    error: str | None = None  # for the person using the app
    detail: str | None = None  # the technical reason behind ``error``, for the "advanced" view
    original_size: tuple[int, int] | None = None
    gender: GenderConfidence = field(default_factory=lambda: GenderConfidence(is_calibrated=False))
    _encoded: dict = field(default_factory=dict, repr=False)

    @property
    def message(self) -> str | None:
        """The error, or the note that there is no face, for a person to read."""
        if self.error:
            return self.error
        if not self.faces:
            return (f"No face found in {self.name}. Faces should be at least about 40 pixels wide, "
                    f"seen from the front and well lit.")
        return None

    @property
    def texts(self) -> list[FaceText]:
        return face_texts(self.faces, self.gender)

    @property
    def boxes(self) -> list[list[int]]:
        return [list(face.box) for face in self.faces]

    def figure_html(self) -> str:
        if "figure" not in self._encoded:
            self._encoded["figure"] = figure_html(self.image, self.boxes, self.texts, alt=f"{self.name} with "
                                                  f"{len(self.faces)} numbered face{'s' if len(self.faces) != 1 else ''}")
        return self._encoded["figure"]

    def table_html(self) -> str:
        if "table" not in self._encoded:
            self._encoded["table"] = table_html(self.image, self.boxes, self.texts)
        return self._encoded["table"]

    def table(self) -> list[dict[str, Any]]:
        """The persons as the advanced view lists them (with the model's raw probability and the boxes)."""
        return persons_table(self.faces, self.gender, advanced=True)

    @property
    def annotated(self) -> Image.Image | None:
        """The photo with numbered faces and a legend below it (what the download holds)."""
        if self.image is None:
            return None
        if "annotated" not in self._encoded:
            self._encoded["annotated"] = (annotate_numbered(self.image, self.faces, self.texts) if self.faces
                                          else self.image)
        return self._encoded["annotated"]

    def download(self, fmt: str) -> bytes:
        """The annotated image as PNG or JPEG bytes (made when first asked for, then kept)."""
        fmt = fmt.upper()
        if fmt not in self._encoded:
            self._encoded[fmt] = encode_image(self.annotated, fmt)
        return self._encoded[fmt]

    def download_name(self, fmt: str) -> str:
        suffix = {"PNG": "png", "JPEG": "jpg"}[fmt.upper()]
        return f"{Path(self.name).stem or 'image'}_annotated.{suffix}"


def left_to_right(faces: Sequence) -> list:
    return sorted(faces, key=lambda face: (face.box[0], face.box[1]))


def analyse_upload(predictor, data: bytes, name: str = "image", *, max_bytes: int = MAX_UPLOAD_BYTES,
                   max_side: int = MAX_SIDE, progress: Callable[[float, str], None] | None = None) -> Analysis:
    """Decode ``data`` and predict every face in it; never raises.

    Too large, empty, non-image, corrupt and oversized (decompression bomb) inputs and any failure of the model come
    back as ``Analysis.error`` in plain words (the technical reason in ``Analysis.detail``). Photos larger than
    ``max_side`` are shrunk first. ``progress(share, words)`` hears of each step.
    """
    def step(share: float, words: str) -> None:
        if progress is not None:
            progress(share, words)

    gender = GenderConfidence.from_card(getattr(predictor, "card", None))
    if len(data) > max_bytes:
        return Analysis(name, error=too_large_message(name, len(data), max_bytes), gender=gender)
    step(0.05, f"Reading {name}…")
    heif = is_heif(data)
    if heif:
        register_heif()
    try:
        image = open_image(bytes(data))
    except ImageError as exc:
        message = str(exc).replace("<bytes>", name, 1)
        if heif and not register_heif():
            return Analysis(name, error=f"{name} is a HEIC photo, which this server cannot read (pillow-heif is not "
                                        f"installed). Export it as a JPEG and add it again.",
                            detail=message, gender=gender)
        return Analysis(name, error=plain_error(name, message, data), detail=message, gender=gender)
    except Exception as exc:  # pragma: no cover - open_image turns known failures into ImageError
        return Analysis(name, error=f"Cannot read {name}. Try saving it again as a JPEG.",
                        detail=f"{type(exc).__name__}: {exc}", gender=gender)
    original_size = image.size
    if max(image.size) > max_side:
        step(0.2, f"Shrinking {name} to {max_side} pixels…")
        image = fit_within(image, max_side)
    step(0.35, f"Finding faces in {name}…")
    try:
        faces = left_to_right(predictor.predict_image(image))
    except Exception as exc:
        return Analysis(name, image=image, original_size=original_size, gender=gender,
                        error=f"Something went wrong while analysing {name}. Please try again, or try another photo.",
                        detail=f"{type(exc).__name__}: {exc}")
    step(1.0, f"{name}: done")
    return Analysis(name, image=image, faces=faces, original_size=original_size, gender=gender)


def persons_table(faces: Sequence, gender: GenderConfidence | None = None, *,
                  advanced: bool = False) -> list[dict[str, Any]]:
    """One row per face, numbered left to right as on the image; ``advanced`` adds the model's own probability
    and the face's box (pixels of the analysed image)."""
    faces = left_to_right(faces)
    rows = []
    for face, text in zip(faces, face_texts(faces, gender)):
        row: dict[str, Any] = {"person": text.number, "age": text.age, "age range": text.age_range,
                               "gender": text.gender if not text.uncertain else f"uncertain (leans {text.leans})",
                               "confidence": text.confidence}
        if advanced:
            x, y, w, h = (int(v) for v in face.box)
            p_female = face.gender_probability if face.gender == "female" else 1 - face.gender_probability
            row.update({"age (model)": f"{face.age:.1f}", "P(female), model": f"{p_female:.4f}",
                        "box (x, y, w, h)": f"{x}, {y}, {w}, {h}"})
        rows.append(row)
    return rows


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    if fmt.upper() == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- the models ---------------------------------------------------------------------------------------
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
    section = card.get("gender_confidence")
    if section and section.get("a") is not None:
        t = section.get("threshold")
        facts["gender calibration"] = (f"{section.get('method', '?')}, a = {section['a']:.3f}; uncertain below "
                                       + (f"{100 * t:.1f} %" if t is not None else "(none)"))
    return facts


def describe_serving(model, card: dict) -> str:
    """What actually answers: the TFLite export (only loaded when it matches the Keras file) or the Keras model."""
    from agegender.serving.litert import TFLiteModel

    if isinstance(model, TFLiteModel):
        lite = card.get("tflite", {})
        return f"TFLite {lite.get('quantization', '')} export, {model.path.stat().st_size / 2**20:.1f} MB".replace("  ", " ")
    return "Keras model"


def same_model(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same model: the same place, symbolic links not followed (a link in another
    folder is another model: its card beside it may differ)."""
    return os.path.abspath(a) == os.path.abspath(b)


def is_default_model(path: Path) -> bool:
    return same_model(path, default_model_path())


def model_role(path: Path, card: dict) -> str:
    """"recommended" (the default model), "baseline" (the seed CNN) or "other"."""
    if is_default_model(path):
        return "recommended"
    if "seed_cnn" in (str(card.get("architecture", "")), str(card.get("name", "")), Path(path).stem):
        return "baseline"
    return "other"


def model_label(path: Path, card: dict) -> str:
    """The model's entry in the chooser: its name and what it is."""
    role = model_role(path, card)
    return Path(path).stem + {"recommended": " (recommended)", "baseline": " (classic baseline, less accurate)",
                              "other": ""}[role]


def _test_figures(card: dict) -> tuple[float | None, float | None, float | None]:
    """Test age MAE, gender accuracy, and gender accuracy of children (0-12), where the card has them."""
    test = card.get("metrics", {}).get("test", {})
    child = next((b.get("gender_accuracy") for b in test.get("by_age_band", []) if b.get("group") == "0-12"), None)
    return test.get("age_mae"), test.get("gender_accuracy"), child


def model_summary(path: Path, card: dict) -> str:
    """A sentence on what the model is and how good it is, from its card."""
    mae, accuracy, _ = _test_figures(card)
    figures = ""
    if mae is not None and accuracy is not None:
        figures = (f" On faces it never saw, its age is off by {mae:.1f} years on average and its gender is right "
                   f"for {100 * accuracy:.0f} % of faces.")
    role = model_role(path, card)
    if role == "recommended":
        return f"**Recommended:** the most accurate model here.{figures}"
    if role == "baseline":
        return (f"**Classic baseline:** the well-known four-block CNN, kept for comparison; clearly less accurate "
                f"than the recommended model.{figures}")
    return f"Another model trained with this project; not the recommended one.{figures}"


def limits_text(card: dict) -> str:
    """What the model estimates, and its known limits, in a sentence or two."""
    mae, accuracy, child = _test_figures(card)
    parts = ["The model estimates the **apparent** age (how old a face looks) and a **binary** gender (female or "
             "male) from the face alone; it cannot know anyone's real age or how they identify."]
    if mae is not None:
        parts.append(f"Ages are off by about {mae:.0f} years on average, more for people over 60.")
    if child is not None:
        parts.append(f"Children's gender is often wrong (right for only {100 * child:.0f} % of under-13s on faces "
                     f"it never saw), so unsure genders are shown as *uncertain*.")
    parts.append("Do not use it to decide anything about a person.")
    return " ".join(parts)


def gender_note(gender: GenderConfidence, card: dict) -> str:
    """How to read the gender column."""
    section = card.get("gender_confidence") or {}
    if not gender.is_calibrated:
        return ("Confidence is the model's own probability for the gender shown; it is often higher than the model "
                "deserves, especially for children.")
    text = ("Confidence is calibrated on faces the model never saw: of the faces shown with 80 %, about 80 % are "
            "right.")
    if gender.threshold is not None and section.get("threshold_found", True):
        text += (f" Below {100 * gender.threshold:.0f} % the gender is shown as *uncertain*: the threshold is set so "
                 f"that at least {100 * section.get('target_accuracy', 0.95):.0f} % of the genders shown were right "
                 f"in every age group of those faces.")
        test = {row.get("group"): row for row in section.get("test", {}).get("by_age_band", [])}
        child, everyone = test.get("0-12", {}), test.get("all", {})
        if child.get("accuracy_labelled") is not None and everyone.get("accuracy_labelled") is not None:
            text += (f" On other held-out faces, {100 * child['accuracy_labelled']:.0f} % of the children's genders "
                     f"shown were right ({100 * everyone['accuracy_labelled']:.0f} % of everyone's), and "
                     f"{100 * child['uncertain_share']:.0f} % of children were left uncertain.")
    elif section.get("threshold_found") is False:
        text += " No threshold met the target on held-out faces, so every gender is shown as *uncertain*."
    return text


def model_options(folder: str | os.PathLike = MODELS_DIR) -> list[tuple[Path, dict]]:
    """Models with cards in ``folder`` plus the default model; the default first."""
    options = list_models(folder) if Path(folder).is_dir() else []
    default = Path(default_model_path())
    known = {os.path.abspath(p): i for i, (p, _) in enumerate(options)}
    if default.is_file():
        if os.path.abspath(default) in known:
            options.insert(0, options.pop(known[os.path.abspath(default)]))
        else:
            try:
                options.insert(0, (default, read_card(default)))
            except ModelFileError:
                pass
    return options


# -- examples -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    path: Path
    title: str
    caption: str = ""


def list_examples(folder: str | os.PathLike = EXAMPLES_DIR) -> list[Example]:
    """The example photos listed in ``folder/examples.json`` (``[{"file", "title", "caption"}]``) that exist."""
    index = Path(folder) / "examples.json"
    if not index.is_file():
        return []
    try:
        entries = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [Example(Path(folder) / e["file"], e.get("title", e["file"]), e.get("caption", ""))
            for e in entries if (Path(folder) / e.get("file", "")).is_file()]


class SessionCache:
    """Analyses of the session's photos, by model and content, so reruns do not predict again."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._items: dict[tuple, Analysis] = {}

    def get(self, predictor, model_key: str, data: bytes, name: str,
            progress: Callable[[float, str], None] | None = None) -> Analysis:
        key = (model_key, name, len(data), hashlib.sha1(data).hexdigest())
        if key not in self._items:
            if len(self._items) >= self.max_entries:
                self._items.pop(next(iter(self._items)))
            self._items[key] = analyse_upload(predictor, data, name, progress=progress)
        return self._items[key]


# -- pieces of the page in HTML ---------------------------------------------------------------------------
#: Put into words what the uploader refuses in the browser (too large, wrong type): Streamlit marks such a file
#: only with a red "!" and never tells the app. The script watches the uploader's file chips and writes one
#: visible message per refused file into the box below the uploader.
UPLOAD_WATCH_HTML = """
<div id="ag-upload-problems" class="ag-upload-problems" aria-live="polite"></div>
<style>
.ag-upload-problems:empty { display: none; }
.ag-upload-problems .ag-alert { background: rgba(255, 43, 43, 0.09); color: rgb(125, 53, 59); border-radius: 8px;
  padding: 12px 16px; margin: 0 0 8px 0; line-height: 1.5; font-size: 1rem; }
</style>
<script>
(function () {
  const limitMb = %LIMIT%;
  const formats = "%FORMATS%";
  function words(name, size, error) {
    if (/or smaller/.test(error)) {
      return name + " is too large (" + size + "): photos up to " + limitMb + " MB can be analysed. Save a smaller "
        + "copy (for example, export it as a JPEG) and add it again.";
    }
    if (/not allowed/.test(error)) {
      return name + " is not a kind of file this app reads. Choose a photo in " + formats + " format.";
    }
    return name + " could not be uploaded (" + error.replace(/^Error:\\s*/, "") + "). Please try again.";
  }
  function scan() {
    const box = document.getElementById("ag-upload-problems");
    if (!box) return;
    const chips = document.querySelectorAll('[data-testid="stFileUploader"] [data-testid="stFileChip"][aria-invalid="true"]');
    const messages = [];
    chips.forEach(function (chip) {
      const nameEl = chip.querySelector('[data-testid="stFileChipName"]');
      const name = nameEl ? nameEl.textContent : "A file";
      const label = chip.getAttribute("aria-label") || "";
      const size = label.slice(label.lastIndexOf(",") + 1).trim().replace(/MB$/, " MB");
      const alertEl = chip.querySelector('[role="alert"]');
      messages.push(words(name, size, alertEl ? alertEl.textContent : ""));
    });
    const key = messages.join("\\n");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren.apply(box, messages.map(function (text) {
      const div = document.createElement("div");
      div.className = "ag-alert";
      div.setAttribute("role", "alert");
      div.textContent = text;
      return div;
    }));
  }
  if (!window.agUploadObserver) {
    let queued = false;
    window.agUploadObserver = new MutationObserver(function () {
      if (queued) return;
      queued = true;
      requestAnimationFrame(function () { queued = false; scan(); });
    });
    window.agUploadObserver.observe(document.body, {subtree: true, childList: true, attributes: true,
                                                    attributeFilter: ["aria-invalid"]});
  }
  scan();
})();
</script>
""".replace("%LIMIT%", str(MAX_UPLOAD_MB)).replace("%FORMATS%", FORMATS_TEXT)


def scroll_into_view_html(anchor: str, token: str) -> str:
    """A script that scrolls the element with id ``anchor`` into view unless its top is already in the upper half
    of the window (``token`` makes each new result a new element, so the script runs again)."""
    return (f"<script>/* {html.escape(token)} */ (function () {{ const tries = [0, 150, 400, 900];"
            f" tries.forEach(function (ms) {{ setTimeout(function () {{"
            f" const el = document.getElementById({json.dumps(anchor)}); if (!el) return;"
            f" const r = el.getBoundingClientRect();"
            f" if (r.top < 0 || r.top > window.innerHeight * 0.5) el.scrollIntoView({{block: 'start'}});"
            f" }}, ms); }}); }})();</script>")


#: Page-wide styles: a narrower layout on phones, no horizontal overflow.
PAGE_STYLE = """
<style>
@media (max-width: 640px) {
  [data-testid="stMainBlockContainer"] { padding-left: 0.9rem; padding-right: 0.9rem; padding-top: 2.5rem; }
  h1 { font-size: 1.9rem !important; }
}
[data-testid="stMain"] { overflow-x: hidden; }
/* the examples stay side by side on phones, as small tiles */
.st-key-examples [data-testid="stHorizontalBlock"] { flex-wrap: nowrap !important; gap: 0.75rem; }
.st-key-examples [data-testid="stColumn"] { min-width: 0 !important; flex: 1 1 0 !important; width: auto !important;
  max-width: 200px; }
.st-key-examples [data-testid="stColumn"] button { width: 100%; }
</style>
"""


# -- the page -------------------------------------------------------------------------------------
def main() -> None:  # pragma: no cover - exercised by AppTest and the browser tests
    import pandas as pd
    import streamlit as st

    from agegender.serving.display import STYLE
    from agegender.serving.predict import Predictor

    st.set_page_config(page_title="Age and gender", page_icon="🙂", layout="wide",
                       menu_items={"Get help": None, "Report a bug": None,
                                   "About": "Estimates apparent age and gender from faces in photos."})
    st.html(STYLE + PAGE_STYLE)

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
            st.error("No model is installed, so nothing can be analysed yet. Whoever runs this app: see the README "
                     "(`agegender train`, or set AGEGENDER_MODEL).")
            st.stop()
        index = st.selectbox("Model", range(len(options)), format_func=lambda i: model_label(*options[i]),
                             key="model", label_visibility="collapsed",
                             help="The recommended model is the most accurate; the others are kept for comparison.")
        path, card = options[index]
        st.markdown(model_summary(path, card))
    try:
        predictor = get_predictor(str(path))
    except Exception as exc:
        st.error(f"The model {Path(path).stem} cannot be loaded, so nothing can be analysed with it. "
                 f"Choose another model in the sidebar.")
        with st.expander("Advanced: why"):
            st.code(f"{path}: {exc}")
        st.stop()
    gender = GenderConfidence.from_card(predictor.card)
    with st.sidebar:
        with st.expander("Advanced"):
            st.table(pd.DataFrame(describe_card(card).items(), columns=["", "value"]).set_index(""))
            st.caption(f"File: `{path}`")
            st.caption(f"Serving: {describe_serving(predictor.model, predictor.card)}")
    lock = get_lock(str(path))

    st.markdown("Add a photo, try an example or use your webcam: every face gets a number, an estimate of the "
                "person's apparent age with a likely range, and a gender with how sure the model is.")
    st.caption(limits_text(card))
    st.caption(PRIVACY)

    cache = st.session_state.setdefault("analyses", SessionCache())

    def analyse(data: bytes, name: str, progress=None) -> Analysis:
        with lock:
            return cache.get(predictor, str(path), data, name, progress)

    def analyse_with_progress(data: bytes, name: str, number: int, count: int) -> Analysis:
        """Analyse one photo with a progress bar of its own (removed when done)."""
        slot = st.empty()
        prefix = f"Photo {number} of {count}: " if count > 1 else ""
        bar = slot.progress(0.0, text=f"{prefix}waiting for {name}…")

        def progress(share: float, words: str) -> None:
            bar.progress(min(1.0, share), text=prefix + words)

        result = analyse(data, name, progress)
        slot.empty()
        return result

    def show(result: Analysis, key: str, anchor: str | None = None, stacked: bool = False) -> None:
        """One photo's result: the photo with numbered faces beside the table (``stacked``: below it)."""
        st.subheader(result.name, anchor=anchor or False)
        if result.error:
            st.error(result.error)
            if result.detail:
                with st.expander("Advanced: technical details"):
                    st.code(result.detail)
            return
        if not result.faces:
            st.warning(result.message)
            st.image(result.image, caption=f"{result.name} (no face found)", width="stretch")
            return
        count = len(result.faces)
        if stacked:  # the table first: the photo itself is already in view beside it (the camera's preview)
            right, left = st.container(), st.container()
        else:
            left, right = st.columns([3, 2], gap="medium")
        with left:
            st.html(result.figure_html())
            st.caption(f"{result.name}: {count} face{'s' if count > 1 else ''}, numbered from left to right.")
        with right:
            st.html(result.table_html())
            st.caption(gender_note(result.gender, predictor.card))
            with st.container(horizontal=True, wrap=True):
                for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
                    st.download_button(f"Download annotated {fmt}", data=lambda r=result, f=fmt: r.download(f),
                                       file_name=result.download_name(fmt), mime=mime,
                                       key=f"download-{fmt}-{key}", on_click="ignore")
        with st.expander("Advanced: raw figures"):
            st.table(pd.DataFrame(result.table()), hide_index=True)
            if result.original_size and result.original_size != result.image.size:
                st.caption(f"Analysed at {result.image.width} × {result.image.height} pixels (the photo is "
                           f"{result.original_size[0]} × {result.original_size[1]}).")

    mode = st.radio("Mode", MODES, horizontal=True, key="mode", label_visibility="collapsed")

    if mode == MODES[0]:
        examples = list_examples()

        def clear_example() -> None:
            st.session_state.pop("example", None)

        uploads = st.file_uploader(f"Photos ({FORMATS_TEXT}, up to {MAX_UPLOAD_MB} MB each)",
                                   type=UPLOAD_TYPES, accept_multiple_files=True,
                                   max_upload_size=MAX_UPLOAD_MB, key="uploads", on_change=clear_example)
        st.html(UPLOAD_WATCH_HTML, unsafe_allow_javascript=True)
        if examples:
            with st.container(key="examples"):
                st.markdown("**No photo at hand? Try an example:**")
                cols = st.columns(len(examples))
                for number, (col, example) in enumerate(zip(cols, examples)):
                    with col:
                        st.image(str(example.path), width="stretch")
                        if st.button(example.title, key=f"example-{number}", help=example.caption or None):
                            st.session_state["example"] = str(example.path)
        items: list[tuple[str, Callable[[], bytes], int]] = []
        chosen = st.session_state.get("example")
        if chosen and Path(chosen).is_file():
            items.append((Path(chosen).name, Path(chosen).read_bytes, Path(chosen).stat().st_size))
        for upload in uploads or []:
            items.append((upload.name, upload.getvalue, upload.size))
        if not items:
            st.info("Add one or more photos above: every face in them gets a number, an age with its likely range "
                    "and a gender with how sure the model is.")
        overall = st.progress(0.0, text=f"Analysing {len(items)} photos…") if len(items) > 1 else None
        for number, (name, read, size) in enumerate(items, start=1):
            if size > MAX_UPLOAD_BYTES:  # checked before reading the bytes
                st.subheader(name, anchor="result-1" if number == 1 else False)
                st.error(too_large_message(name, size))
            else:
                show(analyse_with_progress(read(), name, number, len(items)), f"upload-{number}",
                     anchor="result-1" if number == 1 else None)
        if items:  # new photos: their results into view (the token changes only when the photos do)
            token = hashlib.sha1(repr([(name, size) for name, _, size in items]).encode()).hexdigest()[:12]
            st.html(scroll_into_view_html("result-1", token), unsafe_allow_javascript=True)
            if overall is not None:
                overall.progress(number / len(items), text=f"{number} of {len(items)} photos analysed")

    elif mode == MODES[1]:
        camera, results = st.columns([1, 1], gap="medium")
        with camera:
            photo = st.camera_input("Take a photo", key="snapshot")
        with results:
            if photo is None:
                st.info("Take a photo: the result appears here.")
            else:
                data = photo.getvalue()
                show(analyse_with_progress(data, "snapshot.jpg", 1, 1), "snapshot", anchor="snapshot-result",
                     stacked=True)
                st.html(scroll_into_view_html("snapshot-result", hashlib.sha1(data).hexdigest()[:12]),
                        unsafe_allow_javascript=True)

    else:
        try:
            live_predictor = get_predictor(str(path), "live")
        except Exception as exc:
            st.error("The live webcam cannot start on this server. Use the webcam snapshot instead.")
            with st.expander("Advanced: technical details"):
                st.code(f"{type(exc).__name__}: {exc}")
            st.stop()
        live_page(st, live_predictor, str(path), lock, gender)


def live_page(st, predictor, model_key: str, lock: threading.Lock,
              gender: GenderConfidence | None = None) -> None:  # pragma: no cover
    """Live webcam through WebRTC: frames go to the server, come back annotated."""
    import time

    import pandas as pd

    from agegender.serving.live import FaceTracker, LiveAnnotator, preload_srtp

    preload_srtp()  # before aiortc: see its docstring (TensorFlow + pylibsrtp crash)
    try:
        import av
        from streamlit_webrtc import WebRtcMode, webrtc_streamer
    except ImportError as exc:
        st.error("The live webcam is not available on this server. Use the webcam snapshot instead.")
        with st.expander("Advanced: technical details"):
            st.code(f"streamlit-webrtc: {exc}")
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
        st.error("The live webcam is misconfigured on this server. Use the webcam snapshot instead.")
        with st.expander("Advanced: technical details"):
            st.code(str(exc))
        return
    video, table = st.columns([3, 2])
    with video:
        ctx = webrtc_streamer(
            key="live", mode=WebRtcMode.SENDRECV, rtc_configuration=config,
            media_stream_constraints={"video": {"width": LIVE_SIZE[0], "height": LIVE_SIZE[1]}, "audio": False},
            video_frame_callback=callback, async_processing=True)
        if not config["iceServers"]:
            with st.expander("Advanced: connection"):
                st.caption("No STUN/TURN server is configured: the browser must reach this server directly "
                           "(same machine or network). Set AGEGENDER_ICE_SERVERS for other setups.")
    placeholder = table.empty()
    while ctx.state.playing:
        faces = annotator.tracker.current
        with placeholder.container():
            if annotator.last_error:
                st.error("Live prediction stopped working. Press STOP and START to try again.")
            elif faces:
                st.table(pd.DataFrame(persons_table(faces, gender)), hide_index=True)
            else:
                st.info(f"No face in view ({annotator.frames} frames analysed).")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
