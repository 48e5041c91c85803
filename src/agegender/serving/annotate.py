"""Drawing predictions on an image: a box per face, age with its range, gender with its confidence.

The words come from :func:`agegender.serving.display.face_text`, as in the app's table.
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .display import COLORS, FaceText, face_text, face_texts, marker_share, place_markers
from .gender_confidence import GenderConfidence


def label(face, gender: GenderConfidence | None = None) -> str:
    return face_text(face, gender).label


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def annotate(image: Image.Image, faces: Sequence, gender: GenderConfidence | None = None) -> Image.Image:
    """A copy of ``image`` with each face boxed and labelled, numbered in the order given
    (detectors return faces left to right); labels are kept inside the image.

    For video frames and quick looks: with many faces close together the labels can overlap
    (:func:`annotate_numbered` never does)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(max(12, out.width // 45))
    for text, face in zip(face_texts(faces, gender), faces):
        x, y, w, h = face.box
        color = COLORS.get(text.gender, (255, 200, 0))
        draw.rectangle([x, y, x + w, y + h], outline=color, width=max(2, out.width // 300))
        words = f"{text.number}: {text.label}"
        left, top, right, bottom = draw.textbbox((0, 0), words, font=font)
        width, height = right - left, bottom - top
        tx = min(max(0, x), max(0, out.width - width - 4))
        ty = y - height - 8 if y - height - 8 >= 0 else min(y + h + 4, out.height - height - 4)
        draw.rectangle([tx - 2, ty - 2, tx + width + 2, ty + height + 4], fill=color)
        draw.text((tx - left, ty - top), words, fill=(255, 255, 255), font=font)
    return out


def annotate_numbered(image: Image.Image, faces: Sequence, texts: Sequence[FaceText] | None = None,
                      gender: GenderConfidence | None = None) -> Image.Image:
    """``image`` with each face boxed and numbered (markers placed by :func:`place_markers`, never overlapping)
    and, below it, a legend: one line per number with its age, range and gender, as in the app's table."""
    texts = list(texts) if texts is not None else face_texts(faces, gender)
    photo = image.convert("RGB")
    width, height = photo.size
    boxes = [face.box for face in faces]
    side = max(14, int(marker_share(len(boxes)) * width))
    centres = place_markers(boxes, width, height, side)
    line = max(16, width // 40)
    font, marker_font = _font(line), _font(max(10, int(side * 0.55)))
    legend_height = (len(texts) + 1) * int(line * 1.5) if texts else 0
    out = Image.new("RGB", (width, height + legend_height), (255, 255, 255))
    out.paste(photo, (0, 0))
    draw = ImageDraw.Draw(out)
    stroke = max(2, width // 300)
    for face, text in zip(faces, texts):
        x, y, w, h = face.box
        draw.rectangle([x, y, x + w, y + h], outline=text.color, width=stroke)
    for (cx, cy), text in zip(centres, texts):
        r = side / 2
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=text.color, outline=(255, 255, 255), width=stroke)
        draw.text((cx, cy), str(text.number), fill=(255, 255, 255), font=marker_font, anchor="mm")
    y = height + int(line * 0.5)
    for text in texts:
        draw.text((int(line * 0.5), y), f"{text.number}:  {text.label}", fill=text.color, font=font)
        y += int(line * 1.5)
    return out
