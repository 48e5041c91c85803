"""Drawing predictions on an image: a box per face, age with its range, gender with its probability."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

COLORS = {"female": (230, 60, 140), "male": (40, 120, 230)}


def label(face) -> str:
    return f"{face.age:.0f} ({face.age_low:.0f}-{face.age_high:.0f}), {face.gender} {100 * face.gender_probability:.0f}%"


def annotate(image: Image.Image, faces: Sequence) -> Image.Image:
    """A copy of ``image`` with each face boxed and labelled; faces are numbered left to right."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    size = max(12, out.width // 45)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        font = ImageFont.load_default()
    for number, face in enumerate(faces, start=1):
        x, y, w, h = face.box
        color = COLORS.get(face.gender, (255, 200, 0))
        draw.rectangle([x, y, x + w, y + h], outline=color, width=max(2, out.width // 300))
        text = f"{number}: {label(face)}"
        left, top, right, bottom = draw.textbbox((x, max(0, y - size - 6)), text, font=font)
        draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=color)
        draw.text((x, max(0, y - size - 6)), text, fill=(255, 255, 255), font=font)
    return out
