#!/usr/bin/env python3
"""Make the app's example photos in ``data/examples/`` from crops of the bundled UTKFace sample.

    .venv/bin/python scripts/make_examples.py

Whole photographs whose licence allows redistribution were not at hand (the wild photos in
``shared/datasets/wild_samples`` must not be committed), so each example is a plain canvas with UTKFace face crops
from ``data/sample/`` placed on it: the same images, under the same terms (UTKFace: non-commercial research only;
see ``data/examples/CREDITS.md``). All crops are from the test split, which no model here was trained on.
Deterministic: running it again writes the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
OUT = REPO / "data" / "examples"

#: (file, title, caption, canvas size, [(crop, (x, y), side)]).
EXAMPLES = [
    ("six_faces.jpg", "Six faces", "a collage of six people aged 3 to 70", (1280, 720), [
        ("8_1_0_20170109204144358.jpg.chip.jpg", (130, 70), 220),
        ("3_0_0_20170110213411465.jpg.chip.jpg", (160, 420), 200),
        ("31_0_1_20170114032310376.jpg.chip.jpg", (525, 50), 230),
        ("28_1_0_20170108225857948.jpg.chip.jpg", (535, 400), 220),
        ("70_0_0_20170104213700973.jpg.chip.jpg", (930, 80), 210),
        ("62_1_2_20170116191832323.jpg.chip.jpg", (920, 410), 210),
    ]),
    ("child.jpg", "A child", "a young child: the gender is shown as uncertain", (854, 480), [
        ("3_0_0_20170110213411465.jpg.chip.jpg", (307, 120), 240),
    ]),
    ("adult.jpg", "An adult", "one adult face", (854, 480), [
        ("50_0_3_20170119204603807.jpg.chip.jpg", (307, 120), 240),
    ]),
]


def canvas(size: tuple[int, int]) -> Image.Image:
    """A soft vertical gradient, like a plain studio backdrop."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    top, bottom = (226, 221, 212), (190, 184, 174)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    index, credits = [], []
    for file, title, caption, size, faces in EXAMPLES:
        image = canvas(size)
        for crop, (x, y), side in faces:
            face = Image.open(SAMPLE / crop).convert("RGB").resize((side, side), Image.LANCZOS)
            image.paste(face, (x, y))
        image.save(OUT / file, quality=90, optimize=True)
        index.append({"file": file, "title": title, "caption": caption})
        credits.append(f"- `{file}`: " + ", ".join(f"`data/sample/{crop}`" for crop, _, _ in faces))
    (OUT / "examples.json").write_text(json.dumps(index, indent=2) + "\n")
    (OUT / "CREDITS.md").write_text(CREDITS.format(files="\n".join(credits)))
    print(f"wrote {len(index)} examples to {OUT}")


CREDITS = """# Example photos: credits and licence

The app's example photos (`*.jpg` here, listed in `examples.json`) are made by `scripts/make_examples.py`: UTKFace
face crops from `data/sample/` placed on a plain canvas. Each file uses these crops:

{files}

- Source: UTKFace, Zhang, Song, Qi: "Age Progression/Regression by Conditional Adversarial Autoencoder", CVPR 2017,
  https://susanqq.github.io/UTKFace/
- Licence: UTKFace is available for **non-commercial research purposes only**; the copyright of the images belongs
  to their original owners. The MIT licence of this repository does not apply to these images.
- All crops are from the test split (by the project's hash split), so no model here was trained on them.

Whole photographs were not used: the wild photos the project tests with (`shared/datasets/wild_samples`) may not be
committed.
"""


if __name__ == "__main__":
    main()
