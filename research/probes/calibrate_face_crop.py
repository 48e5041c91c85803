"""Measure where UTKFace's aligned 200x200 crops lie relative to a detector's face box.

    python research/probes/calibrate_face_crop.py [--utkface DIR] [--n 500] [--detectors blazeface,mtcnn,haar]

Each UTKFace crop is put in the middle of a 400x400 canvas (a 100 px border, reflected or
flat grey) so the detector sees some context; the face nearest the canvas centre is taken.
With ``side = sqrt(w * h)`` of the detected box, one crop gives

- ``scale`` = 200 / side (crop side in box sides),
- ``dx``, ``dy`` = (crop centre - box centre) / side,

and, when the detector gives eyes, the same relative to the eyes (``scale_eyes`` = 200 / eye
distance, offsets from the eyes' midpoint). The medians over the first ``--n`` images (a
seeded random sample) are the crop parameters (``agegender.serving.faces.CROP_PARAMS``); they are then
checked on ``--n`` other images: the IoU between the crop :func:`agegender.serving.faces.crop_box`
would cut and the true 200x200 frame (rotated crops are intersected as polygons).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agegender.serving.faces import CropParams, Face, crop_box, load_detector  # noqa: E402

CROP, PAD = 200, 100
BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "grey": cv2.BORDER_CONSTANT}


def default_utkface() -> Path:
    env = os.environ.get("UTKFACE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets" / "UTKFace"


def embed(path: Path, border: str) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (CROP, CROP):
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.copyMakeBorder(rgb, PAD, PAD, PAD, PAD, BORDERS[border], value=(128, 128, 128))


def central_face(faces: list[Face]) -> Face | None:
    """The detection whose centre is nearest the canvas centre, if it lies inside the crop frame."""
    centre = PAD + CROP / 2
    inside = [f for f in faces if PAD <= f.center[0] <= PAD + CROP and PAD <= f.center[1] <= PAD + CROP]
    return min(inside, key=lambda f: (f.center[0] - centre) ** 2 + (f.center[1] - centre) ** 2, default=None)


def measure(face: Face) -> dict[str, float]:
    x, y, w, h = face.box
    side = float(np.sqrt(w * h))
    centre = PAD + CROP / 2
    out = {"scale": CROP / side, "dx": (centre - (x + w / 2)) / side, "dy": (centre - (y + h / 2)) / side,
           "aspect": h / w}
    if face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        dist = float(np.hypot(rx - lx, ry - ly))
        mx, my = (lx + rx) / 2, (ly + ry) / 2
        out.update(scale_eyes=CROP / dist, dx_eyes=(centre - mx) / dist, dy_eyes=(centre - my) / dist,
                   angle=float(np.degrees(np.arctan2(ry - ly, rx - lx))))
    return out


def square(cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    rad = np.radians(angle)
    u = np.array([np.cos(rad), np.sin(rad)]) * side / 2
    v = np.array([-np.sin(rad), np.cos(rad)]) * side / 2
    c = np.array([cx, cy])
    return np.array([c - u - v, c + u - v, c + u + v, c - u + v], np.float32)


def iou_with_frame(cx: float, cy: float, side: float, angle: float) -> float:
    crop = square(cx, cy, side, angle)
    frame = square(PAD + CROP / 2, PAD + CROP / 2, CROP, 0.0)
    inter, _ = cv2.intersectConvexConvex(crop, frame)
    return float(inter / (side * side + CROP * CROP - inter))


def eye_crop(face: Face, scale: float, dx: float, dy: float) -> tuple[float, float, float, float]:
    (lx, ly), (rx, ry) = face.eyes
    dist = float(np.hypot(rx - lx, ry - ly))
    angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    rad = np.radians(angle)
    ox, oy = dx * dist, dy * dist
    cx = (lx + rx) / 2 + ox * np.cos(rad) - oy * np.sin(rad)
    cy = (ly + ry) / 2 + ox * np.sin(rad) + oy * np.cos(rad)
    return cx, cy, scale * dist, angle


def q(values, p) -> float:
    return float(np.percentile(values, p))


def summary(values) -> str:
    return f"{np.median(values):.3f} (IQR {q(values, 25):.3f}-{q(values, 75):.3f})"


def iou_summary(values) -> str:
    v = np.asarray(values)
    return (f"median {np.median(v):.3f}, mean {v.mean():.3f}, p10 {q(v, 10):.3f}, "
            f"IoU>=0.8: {np.mean(v >= 0.8):.0%}, >=0.7: {np.mean(v >= 0.7):.0%}")


def detect_all(detector, paths: list[Path], border: str) -> tuple[list[Face], float]:
    """The central face of each embedded crop (missed ones left out), and CPU ms per image."""
    t0 = time.process_time()
    faces = []
    for path in paths:
        canvas = embed(path, border)
        face = central_face(detector.detect(canvas)) if canvas is not None else None
        if face is not None:
            faces.append(face)
    return faces, 1000 * (time.process_time() - t0) / len(paths)


def columns(faces: list[Face]) -> dict[str, np.ndarray]:
    rows = [measure(f) for f in faces]
    return {k: np.array([r[k] for r in rows if k in r]) for k in rows[0]} if rows else {}


def check_ious(faces: list[Face], params: CropParams, cols: dict[str, np.ndarray]) -> None:
    ious: dict[str, list[float]] = {"box + eye rotation (crop_face)": [], "box, no rotation": [], "eyes only": []}
    for face in faces:
        cx, cy, side, angle = crop_box(face, params)
        ious["box + eye rotation (crop_face)"].append(iou_with_frame(cx, cy, side, angle))
        ious["box, no rotation"].append(iou_with_frame(cx, cy, side, 0.0))
        if face.eyes is not None and "scale_eyes" in cols:
            eyes = eye_crop(face, *(float(np.median(cols[k])) for k in ("scale_eyes", "dx_eyes", "dy_eyes")))
            ious["eyes only"].append(iou_with_frame(*eyes))
    for key, values in ious.items():
        if values:
            print(f"- {key}: {iou_summary(values)}")


def run(detector_name: str, borders: list[str], calib: list[Path], check: list[Path]) -> None:
    detector = load_detector(detector_name, retry_padded=False)
    measured, held_out = {}, {}
    for border in borders:
        faces, ms = detect_all(detector, calib, border)
        measured[border] = faces
        cols = columns(faces)
        print(f"\n### {detector_name}, {border} border\n")
        print(f"calibration images: {len(calib)}, face found: {len(faces)} ({len(faces) / len(calib):.1%}), "
              f"CPU {ms:.0f} ms/image\n")
        for key in ("scale", "dx", "dy", "aspect", "scale_eyes", "dx_eyes", "dy_eyes", "angle"):
            if key in cols and len(cols[key]):
                print(f"- {key}: {summary(cols[key])}")
        held_out[border], _ = detect_all(detector, check, border)
    pooled = columns([f for faces in measured.values() for f in faces])
    if not pooled:
        return
    params = CropParams(*(round(float(np.median(pooled[k])), 3) for k in ("scale", "dx", "dy")))
    print(f"\n**{detector_name}: medians pooled over the {' and '.join(borders)} borders "
          f"({len(pooled['scale'])} measurements) -> `CropParams(scale={params.scale}, dx={params.dx}, "
          f"dy={params.dy})`**")
    for border in borders:
        n = len(held_out[border])
        print(f"\nheld-out images, {border} border: {len(check)}, face found: {n} ({n / len(check):.1%}); "
              "IoU of the crop with the true 200x200 frame:\n")
        check_ious(held_out[border], params, pooled)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utkface", type=Path, default=default_utkface())
    parser.add_argument("--n", type=int, default=500, help="images to calibrate on, and as many to check on")
    parser.add_argument("--detectors", default="blazeface")
    parser.add_argument("--borders", default="reflect,grey")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    names = sorted(p.name for p in args.utkface.iterdir() if p.name.endswith(".jpg"))
    sample = random.Random(args.seed).sample(names, 2 * args.n)
    calib = [args.utkface / n for n in sample[:args.n]]
    check = [args.utkface / n for n in sample[args.n:]]
    print(f"UTKFace: {len(names)} crops; calibrating on {len(calib)}, checking on {len(check)} others "
          f"(seed {args.seed}); canvas {CROP + 2 * PAD}x{CROP + 2 * PAD}")
    for name in args.detectors.split(","):
        try:
            run(name, args.borders.split(","), calib, check)
        except RuntimeError as exc:
            print(f"\n### {name}: unavailable: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
