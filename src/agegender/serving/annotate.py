"""Drawing predictions on an image: a box per face, age with its range, gender with its probability."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

COLORS = {"female": (230, 60, 140), "male": (40, 120, 230)}


def label(face) -> str:
    return f"{face.age:.0f} ({face.age_low:.0f}-{face.age_high:.0f}), {face.gender} {100 * face.gender_probability:.0f}%"


def annotate(image: Image.Image, faces: Sequence) -> Image.Image:
    """A copy of ``image`` with each face boxed and labelled, numbered in the order given
    (detectors return faces left to right); labels are kept inside the image."""
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
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = right - left, bottom - top
        tx = min(max(0, x), max(0, out.width - width - 4))
        ty = y - height - 8 if y - height - 8 >= 0 else min(y + h + 4, out.height - height - 4)
        draw.rectangle([tx - 2, ty - 2, tx + width + 2, ty + height + 4], fill=color)
        draw.text((tx - left, ty - top), text, fill=(255, 255, 255), font=font)
    return out
