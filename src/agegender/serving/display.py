"""How a face's estimates are written and where its number goes on the image: one place for the app and the
annotated images, so that a table and a label never round the same age differently.

- :func:`face_text` formats a prediction (age and range in whole years, rounded half up; the gender as a calibrated
  confidence or "uncertain", :mod:`agegender.serving.gender_confidence`).
- :func:`place_markers` finds a spot for each face's numbered marker near its face, such that no two markers
  overlap (and, where there is room, no marker covers another face).
- :func:`figure_html` and :func:`table_html` are the app's image with numbered markers (HTML over the photo, so the
  numbers are sharp at any screen size) and its table with a thumbnail of each face.

Nothing here needs Streamlit or a model.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from typing import Sequence

from PIL import Image

from .gender_confidence import GenderConfidence

#: Colours of the markers and boxes, by what is shown as the gender.
COLORS = {"female": (200, 40, 120), "male": (30, 100, 210), "uncertain": (110, 110, 110)}
#: A marker's slot is this share of the image's width (square), so that markers scale with the image...
MARKER_SHARE = 0.07
#: ... but never drawn larger than this many CSS pixels (the slot stays reserved, so nothing overlaps).
MARKER_MAX_PX = 34
#: With many faces the slots shrink, down to this share.
MARKER_MIN_SHARE = 0.035


def round_years(value: float) -> int:
    """Whole years, halves rounded up (Python's round() would send 28.5 to 28 and 29.5 to 30)."""
    return int(math.floor(float(value) + 0.5))


def p_female_of(face) -> float:
    """P(female) of a prediction (which states the probability of its own gender)."""
    return face.gender_probability if face.gender == "female" else 1.0 - face.gender_probability


@dataclass(frozen=True)
class FaceText:
    """A face's estimates as shown: every table, label and legend takes its words from here."""

    number: int
    age: str  # "29"
    age_range: str  # "24-35"
    gender: str  # "female" | "male" | "uncertain"
    leans: str  # "female" | "male"
    confidence: str  # "87 %"
    calibrated: bool

    @property
    def uncertain(self) -> bool:
        return self.gender == "uncertain"

    @property
    def gender_text(self) -> str:
        if self.uncertain:
            return f"uncertain (leans {self.leans}, {self.confidence})"
        return f"{self.gender}, {self.confidence}"

    @property
    def label(self) -> str:
        return f"{self.age} ({self.age_range}), {self.gender_text}"

    @property
    def color(self) -> tuple[int, int, int]:
        return COLORS[self.gender]


def face_text(face, gender: GenderConfidence | None = None, number: int = 0) -> FaceText:
    """How ``face`` (a FacePrediction or anything with its fields) is written.

    ``gender`` is the model card's calibration (:meth:`GenderConfidence.from_card`); without it the model's own
    probability is shown and nothing is "uncertain".
    """
    call = (gender or GenderConfidence(is_calibrated=False)).call(p_female_of(face))
    low, high = round_years(face.age_low), round_years(face.age_high)
    return FaceText(number=number, age=str(round_years(face.age)), age_range=f"{low}-{high}", gender=call.gender,
                    leans=call.leans, confidence=percent(call.confidence), calibrated=call.calibrated)


def percent(confidence: float) -> str:
    """"87 %"; never "100 %" (no estimate is certain): from 99.5 % on, ">99 %"."""
    return ">99 %" if confidence >= 0.995 else f"{100 * confidence:.0f} %"


def face_texts(faces: Sequence, gender: GenderConfidence | None = None) -> list[FaceText]:
    """:func:`face_text` of each face, numbered from 1 in the order given (left to right)."""
    return [face_text(face, gender, number) for number, face in enumerate(faces, start=1)]


# -- where the numbers go -------------------------------------------------------------------------------
def marker_share(count: int) -> float:
    """The marker slot's share of the image width for ``count`` faces (smaller when there are many)."""
    if count <= 8:
        return MARKER_SHARE
    return max(MARKER_MIN_SHARE, MARKER_SHARE * math.sqrt(8 / count))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two (x0, y0, x1, y1) rectangles share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_markers(boxes: Sequence[Sequence[float]], width: int, height: int,
                  side: float | None = None) -> list[tuple[float, float]]:
    """The centre of each face's marker, a square of ``side`` pixels (default: :func:`marker_share` of ``width``).

    Markers are placed in the order given, each at the first of these spots that is inside the image, overlaps no
    marker placed before it and covers no other face: centred above its box, below it, left of it, right of it,
    in its box's top-left corner; failing all, the nearest free spot on a grid (which may cover a face); failing
    that too (more faces than fit), above its box. No two markers overlap whenever the image has room for them.
    """
    side = float(side if side is not None else marker_share(len(boxes)) * width)
    half = side / 2
    faces = [(float(x), float(y), float(x) + float(w), float(y) + float(h)) for x, y, w, h in boxes]
    placed: list[tuple[float, float, float, float]] = []
    centres: list[tuple[float, float]] = []

    def clamp(cx: float, cy: float) -> tuple[float, float]:
        return (min(max(cx, half), max(half, width - half)), min(max(cy, half), max(half, height - half)))

    def rect(c: tuple[float, float]) -> tuple[float, float, float, float]:
        return (c[0] - half, c[1] - half, c[0] + half, c[1] + half)

    def free(c: tuple[float, float], own: int, avoid_faces: bool) -> bool:
        r = rect(c)
        if any(_overlaps(r, other) for other in placed):
            return False
        return not avoid_faces or not any(_overlaps(r, f) for j, f in enumerate(faces) if j != own)

    for i, (x0, y0, x1, y1) in enumerate(faces):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        gap = 0.15 * half
        spots = [(cx, y0 - half - gap), (cx, y1 + half + gap), (x0 - half - gap, cy), (x1 + half + gap, cy),
                 (x0 + half, y0 + half)]
        chosen = None
        for spot in spots:
            spot = clamp(*spot)
            if free(spot, i, avoid_faces=True):
                chosen = spot
                break
        if chosen is None:  # the nearest free spot on a grid of half-marker steps, covering faces if need be
            step = max(1.0, half)
            grid = [clamp(half + gx * step, half + gy * step)
                    for gy in range(int(max(height - side, 0) // step) + 1)
                    for gx in range(int(max(width - side, 0) // step) + 1)]
            grid.sort(key=lambda c: (c[0] - cx) ** 2 + (c[1] - (y0 - half)) ** 2)
            for avoid in (True, False):
                chosen = next((c for c in grid if free(c, i, avoid)), None)
                if chosen is not None:
                    break
        if chosen is None:
            chosen = clamp(cx, y0 - half - gap)
        centres.append(chosen)
        placed.append(rect(chosen))
    return centres


# -- HTML for the app -------------------------------------------------------------------------------------------
def data_url(image: Image.Image, fmt: str = "JPEG", quality: int = 85) -> str:
    buffer = io.BytesIO()
    if fmt.upper() == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        image.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` shrunk (a copy) so that its longer side is at most ``max_side``; itself when it already is."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.LANCZOS, reducing_gap=1.5)  # box-reduces first: fast on large photos


def thumbnail(image: Image.Image, box: Sequence[float], size: int = 96, margin: float = 0.25) -> Image.Image:
    """A square crop around a face's box (with ``margin`` of its size around it), ``size`` pixels wide."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    crop = image.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    return crop.resize((size, size), Image.LANCZOS)


def _rgb(color: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*color)


#: The page's styles for :func:`figure_html` and :func:`table_html` (given once per page).
STYLE = """
<style>
.ag-figure { position: relative; width: 100%; max-width: 100%; container-type: inline-size; line-height: 0; }
.ag-figure img.ag-photo { width: 100%; height: auto; display: block; border-radius: 4px; }
.ag-box { position: absolute; box-sizing: border-box; border: 2px solid; border-radius: 3px; pointer-events: none; }
.ag-marker { position: absolute; transform: translate(-50%, -50%); aspect-ratio: 1 / 1; box-sizing: border-box;
  width: min(var(--ag-slot), %MAXPX%px); border-radius: 50%; border: 2px solid #fff; color: #fff;
  display: flex; align-items: center; justify-content: center; font-weight: 700; line-height: 1;
  font-size: min(calc(var(--ag-slot-cqw) * 0.55), 18px); box-shadow: 0 1px 3px rgba(0,0,0,.5);
  font-family: system-ui, sans-serif; cursor: default; }
.ag-table { width: 100%; border-collapse: collapse; font-size: 0.95rem; }
.ag-table th { text-align: left; font-weight: 600; border-bottom: 1px solid rgba(128,128,128,.4); padding: 4px 6px; }
.ag-table td { border-bottom: 1px solid rgba(128,128,128,.2); padding: 4px 6px; vertical-align: middle; }
.ag-table img { width: 48px; height: 48px; border-radius: 4px; display: block; }
.ag-num { display: inline-flex; width: 1.7em; height: 1.7em; border-radius: 50%; color: #fff; font-weight: 700;
  align-items: center; justify-content: center; }
.ag-muted { opacity: .75; font-size: .85em; }
.ag-table-wrap { max-width: 100%; overflow-x: auto; }
</style>
""".replace("%MAXPX%", str(MARKER_MAX_PX))


def figure_html(image: Image.Image, boxes: Sequence[Sequence[float]], texts: Sequence[FaceText], *,
                alt: str = "photo", max_side: int = 1600) -> str:
    """The photo with a box and a numbered marker per face, as HTML: positions are shares of the image, so
    boxes and markers follow the photo at any width, and the numbers stay sharp text."""
    width, height = image.size
    shown = fit_within(image, max_side)
    share = marker_share(len(boxes))
    centres = place_markers(boxes, width, height, share * width)
    parts = [f'<div class="ag-figure" style="--ag-slot: {100 * share:.3f}%; --ag-slot-cqw: {100 * share:.3f}cqw;">',
             f'<img class="ag-photo" src="{data_url(shown)}" alt="{html.escape(alt)}">']
    for (x, y, w, h), text in zip(boxes, texts):
        parts.append(f'<div class="ag-box" style="left: {100 * x / width:.3f}%; top: {100 * y / height:.3f}%; '
                     f'width: {100 * w / width:.3f}%; height: {100 * h / height:.3f}%; '
                     f'border-color: {_rgb(text.color)};"></div>')
    for (cx, cy), text in zip(centres, texts):
        title = html.escape(f"{text.number}: {text.label}")
        parts.append(f'<div class="ag-marker" data-face="{text.number}" title="{title}" aria-label="{title}" '
                     f'style="left: {100 * cx / width:.3f}%; top: {100 * cy / height:.3f}%; '
                     f'background: {_rgb(text.color)};">{text.number}</div>')
    parts.append("</div>")
    return "".join(parts)


TABLE_COLUMNS = ("#", "face", "age", "likely range", "gender", "confidence")


def table_rows(texts: Sequence[FaceText]) -> list[dict[str, str]]:
    """The persons table as plain rows (what :func:`table_html` shows, without the thumbnails)."""
    return [{"#": str(t.number), "age": t.age, "likely range": t.age_range,
             "gender": t.gender if not t.uncertain else f"uncertain (leans {t.leans})", "confidence": t.confidence}
            for t in texts]


def table_html(image: Image.Image, boxes: Sequence[Sequence[float]], texts: Sequence[FaceText]) -> str:
    """One row per face: its number (coloured as on the image), a thumbnail, age, likely range, gender, confidence."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    rows = []
    for box, text, row in zip(boxes, texts, table_rows(texts)):
        thumb = data_url(thumbnail(image, box), quality=88)
        gender = html.escape(text.gender)
        if text.uncertain:
            gender = f'uncertain <span class="ag-muted">(leans {html.escape(text.leans)})</span>'
        rows.append(f'<tr data-face="{text.number}">'
                    f'<td><span class="ag-num" style="background: {_rgb(text.color)};">{text.number}</span></td>'
                    f'<td><img src="{thumb}" alt="face {text.number}"></td>'
                    f'<td>{html.escape(row["age"])}</td><td>{html.escape(row["likely range"])}</td>'
                    f'<td>{gender}</td><td>{html.escape(row["confidence"])}</td></tr>')
    return (f'<div class="ag-table-wrap"><table class="ag-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
