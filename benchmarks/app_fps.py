"""Frames per second of the live path: 640x480 frames with one face, detection + prediction.

Compares, in the same run and on the same frame and model:

- project: ``Predictor.predict_image`` as the app's live mode sets it up
  (``agegender.serving.live.live_predictor``: BlazeFace on the whole frame, ``crop_face``, all faces
  of a frame in one compiled model call, no flip TTA); the upload set-up (default detector,
  flip TTA as the model card says) is measured too;
- reference: the usual tutorial app — OpenCV Haar cascade (``haarcascade_frontalface_default``,
  scaleFactor 1.1, minNeighbors 5, minSize 30x30) on the grayscale frame, then
  ``model.predict`` called once per face.

OpenCV 5 no longer has ``CascadeClassifier``; when the project's cv2 lacks it the
reference runs in a child process with OpenCV 4 first on ``PYTHONPATH`` (installed
once with pip into ``--reference-opencv``, default ``.venv-opencv4/``, git-ignored).

Targets of the issue: project >= 30 frames/s and >= 5x the reference.

    python benchmarks/app_fps.py [--model PATH] [--seconds 10] [--photo FILE]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FRAME_SIZE = (640, 480)
REFERENCE_OPENCV = "opencv-python-headless==4.14.0.94"
PHOTO_GLOBS = ("../shared/datasets/wild_samples/known_persons/fr_obama.jpg",
               "../shared/datasets/wild_samples/known_persons/*.jpg")
TARGET_FPS, TARGET_RATIO = 30.0, 5.0


def find_photo(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for pattern in PHOTO_GLOBS:
        found = sorted(glob.glob(str(ROOT / pattern)))
        if found:
            return Path(found[0])
    assets = sorted((ROOT / "tests" / "assets").glob("*face*.jpg"))
    if assets:
        return assets[0]
    raise SystemExit("no face photo found: pass --photo FILE")


def make_frame(photo: Path, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """The photo scaled to fit ``size`` and centred on a grey background (like a webcam frame)."""
    from agegender.data.images import open_image

    image = open_image(photo)
    scale = min(size[0] / image.width, size[1] / image.height)
    fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                          Image.LANCZOS)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return np.asarray(canvas)


def timed_loop(step, seconds: float, warmup: int = 5, min_frames: int = 20) -> tuple[float, int, float]:
    """Frames per second (wall clock), frames run, and CPU milliseconds per frame (all threads).

    CPU time is less disturbed than wall time when other processes share the cores.
    """
    for _ in range(warmup):
        step()
    frames, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        step()
        frames += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and frames >= min_frames:
            return frames / elapsed, frames, 1000 * (time.process_time() - cpu) / frames


# -- the project's path ---------------------------------------------------------------------------
def measure_project(model_path: str, frame: np.ndarray, seconds: float, detector: str = "live") -> dict:
    """``detector``: "live" (the app's live mode, :data:`agegender.serving.live.LIVE_DETECTOR`) or
    "photo" (the default detector, with tiles for small faces, used for uploads)."""
    from agegender.serving.faces import crop_face, load_detector
    from agegender.serving.live import live_predictor
    from agegender.serving.modelio import load_serving_model
    from agegender.serving.predict import Predictor

    if detector == "live":  # exactly what the app's live mode runs
        model, card = load_serving_model(model_path)
        predictor = live_predictor(model, card, model_path)
    else:
        predictor = Predictor.load(model_path, detector=load_detector())
    image = Image.fromarray(frame)
    faces = predictor.predict_image(image)
    fps, frames, cpu_ms = timed_loop(lambda: predictor.predict_image(Image.fromarray(frame)), seconds)

    # where the time goes: the same work, stage by stage
    detector, stages = predictor.detector, {"detect": 0.0, "crop+resize": 0.0, "model call": 0.0}
    n = max(20, min(frames, 200))
    for _ in range(n):
        t0 = time.perf_counter()
        found = detector.detect(frame)
        t1 = time.perf_counter()
        crops = [predictor.prepare(crop_face(frame, face)) for face in found]
        t2 = time.perf_counter()
        if crops:
            predictor.predict_crops(np.stack(crops), [list(f.box) for f in found])
        t3 = time.perf_counter()
        stages["detect"] += t1 - t0
        stages["crop+resize"] += t2 - t1
        stages["model call"] += t3 - t2
    return {"fps": fps, "frames": frames, "cpu_ms": cpu_ms, "faces": len(faces), "detector": repr(detector),
            "tta_flip": predictor.views["tta_flip"], "tta_zoom": list(predictor.views["tta_zoom"]),
            "ms_per_stage": {k: 1000 * v / n for k, v in stages.items()}}


# -- the reference app's path ---------------------------------------------------------------------
def measure_reference(model_path: str, frame: np.ndarray, seconds: float) -> dict:
    import cv2
    import keras

    from agegender.serving.modelio import load_model

    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(f"cv2 {cv2.__version__} has no CascadeClassifier")
    model, card = load_model(model_path)
    size, mode = int(card["input"]["image_size"]), card["input"]["color_mode"]
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)  # what cv2.VideoCapture delivers

    def step():
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        results = []
        for x, y, w, h in boxes:
            face = gray[y:y + h, x:x + w] if mode == "grayscale" else cv2.cvtColor(bgr[y:y + h, x:x + w],
                                                                                    cv2.COLOR_BGR2RGB)
            face = cv2.resize(face, (size, size)).astype("float32")
            face = face[None, ..., None] if mode == "grayscale" else face[None]
            results.append(model.predict(face, verbose=0))
        return boxes, results

    boxes, _ = step()
    fps, frames, cpu_ms = timed_loop(step, seconds)
    t0 = time.perf_counter()
    for _ in range(20):
        cascade.detectMultiScale(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), scaleFactor=1.1, minNeighbors=5,
                                 minSize=(30, 30))
    detect_ms = (time.perf_counter() - t0) / 20 * 1000
    face = np.zeros((1, size, size, 1 if mode == "grayscale" else 3), "float32")
    t0 = time.perf_counter()
    for _ in range(20):
        model.predict(face, verbose=0)
    predict_ms = (time.perf_counter() - t0) / 20 * 1000
    return {"fps": fps, "frames": frames, "cpu_ms": cpu_ms, "faces": int(len(boxes)), "opencv": cv2.__version__,
            "ms_per_stage": {"haar detect": detect_ms, "model.predict per face": predict_ms},
            "keras": keras.__version__}


def reference_in_child(args, frame_file: Path) -> dict:
    """Run :func:`measure_reference` where ``import cv2`` is OpenCV 4."""
    target = Path(args.reference_opencv)
    if not (target / "cv2").is_dir():
        print(f"installing {REFERENCE_OPENCV} into {target} for the reference (OpenCV 5 has no Haar cascades)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                        REFERENCE_OPENCV], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--only", "reference", "--model", args.model,
                          "--seconds", str(args.seconds), "--frame", str(frame_file)],
                         env=env, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pick_model() -> str:
    """The default model, else the newest model with a card in models/."""
    from agegender.config import MODELS_DIR, default_model_path
    from agegender.serving.modelio import list_models

    path = default_model_path()
    if path.is_file():
        return str(path)
    found = list_models(MODELS_DIR) if MODELS_DIR.is_dir() else []
    if not found:
        raise SystemExit(f"no model: {path} is missing and {MODELS_DIR} has none; pass --model PATH")
    return str(found[0][0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .keras model with its card (default: the default model)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per path")
    parser.add_argument("--photo", help="a photo with one face (default: a known_persons photo)")
    parser.add_argument("--reference-opencv", default=str(ROOT / ".venv-opencv4"))
    parser.add_argument("--only", choices=["project", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--frame", help=argparse.SUPPRESS)  # a .npy frame, for the child process
    args = parser.parse_args(argv)

    if args.only:
        frame = np.load(args.frame)
        measure = measure_reference if args.only == "reference" else measure_project
        print(json.dumps(measure(args.model, frame, args.seconds)))
        return 0

    args.model = args.model or pick_model()
    photo = find_photo(args.photo)
    frame = make_frame(photo)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"frame: {photo.name} fitted into {FRAME_SIZE[0]}x{FRAME_SIZE[1]}; model: {args.model}; "
          f"{args.seconds:g} s per path; {os.cpu_count()} CPUs, load average {load} at start")
    project = measure_project(args.model, frame, args.seconds, "live")
    photo_mode = measure_project(args.model, frame, min(args.seconds, 5.0), "photo")
    import cv2

    if hasattr(cv2, "CascadeClassifier"):
        reference = measure_reference(args.model, frame, args.seconds)
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            frame_file = Path(tmp) / "frame.npy"
            np.save(frame_file, frame)
            reference = reference_in_child(args, frame_file)

    ratio = project["fps"] / reference["fps"]
    stages = lambda r: ", ".join(f"{k} {v:.1f} ms" for k, v in r["ms_per_stage"].items())  # noqa: E731
    print(f"project   : {project['fps']:7.1f} frames/s ({project['faces']} face(s) found; "
          f"{project['detector']}; flip TTA {'on' if project['tta_flip'] else 'off'}; {stages(project)})")
    print(f"  as for uploads (default detector, flip TTA as in the card): {photo_mode['fps']:.1f} frames/s; "
          f"{stages(photo_mode)}")
    print(f"reference : {reference['fps']:7.1f} frames/s ({reference['faces']} face(s) found; "
          f"Haar cascade, OpenCV {reference['opencv']}; {stages(reference)})")
    print(f"ratio     : {ratio:7.2f}x (CPU time per frame: project {project['cpu_ms']:.1f} ms, "
          f"reference {reference['cpu_ms']:.1f} ms, {reference['cpu_ms'] / project['cpu_ms']:.2f}x)")
    print(f"targets   : >= {TARGET_FPS:.0f} frames/s {'met' if project['fps'] >= TARGET_FPS else 'NOT met'}; "
          f">= {TARGET_RATIO:.0f}x the reference {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    if project["faces"] != 1 or reference["faces"] != 1:
        print("warning: the frame should show exactly one face to each detector")
    return 0


if __name__ == "__main__":
    sys.exit(main())
