"""dlib's 128-D face descriptors of every UTKFace crop: the teacher signal for distillation (issue #3).

dlib's ResNet face-recognition network ships inside the PyPI package ``face_recognition_models`` (no download at
run time). dlib is not a project dependency, so this script runs in its own environment (``make teacher`` sets it
up) and needs nothing from the project:

    python3 -m venv .venv-dlib && .venv-dlib/bin/pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0 pillow numpy
    .venv-dlib/bin/python scripts/extract_face_descriptors.py --data-dir $UTKFACE_DIR --out data/teacher/dlib_descriptors.npz

The output maps each image's base name to its descriptor (float32). UTKFace crops are already aligned faces, so
the face box is the central 80 % of the crop and dlib's 5-point landmarks place the descriptor's own alignment.
``--reuse`` takes descriptors already computed (same base names) from an earlier file; ``--jobs`` splits the work
over processes (about 100 ms per face per core).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

FACE_BOX = (0.1, 0.9)  # fraction of the crop's width and height that holds the face
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _describe(paths: list[str]) -> tuple[list[str], np.ndarray]:
    import dlib
    import face_recognition_models as models
    from PIL import Image

    landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    names, descriptors, start = [], [], time.time()
    for i, path in enumerate(paths):
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except OSError as error:  # unreadable files are left out; training masks faces without a descriptor
            print(f"skipped {path}: {error}", flush=True)
            continue
        h, w = image.shape[:2]
        box = dlib.rectangle(int(FACE_BOX[0] * w), int(FACE_BOX[0] * h), int(FACE_BOX[1] * w), int(FACE_BOX[1] * h))
        descriptors.append(np.array(net.compute_face_descriptor(image, landmarks(image, box)), dtype=np.float32))
        names.append(os.path.basename(path))
        if i % 1000 == 0:
            print(f"pid {os.getpid()}: {i}/{len(paths)} {time.time() - start:.0f} s", flush=True)
    return names, np.stack(descriptors) if descriptors else np.zeros((0, 128), np.float32)


def extract(data_dir: Path, out: Path, reuse: Path | None = None, jobs: int = 1,
            describe: Callable[[list[str]], tuple[list[str], np.ndarray]] = _describe) -> int:
    """Describe every image of ``data_dir`` not in ``reuse`` and write all descriptors to ``out``; returns the count.

    ``describe`` turns a list of paths into (base names, descriptors); with ``jobs`` > 1 it runs in that many
    processes on interleaved shares of the list.
    """
    if not data_dir.is_dir():
        raise SystemExit(f"{data_dir} is not a folder of face crops")
    known: dict[str, np.ndarray] = {}
    if reuse and reuse.exists():
        saved = np.load(reuse)
        names = saved["name"] if "name" in saved else saved["path"]  # the probe's file keys by full path
        known = {os.path.basename(str(n)): d for n, d in zip(names, saved["descriptor"])}
    paths = sorted(str(p) for p in data_dir.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise SystemExit(f"no images in {data_dir}")
    todo = [p for p in paths if os.path.basename(p) not in known]
    print(f"{len(paths)} images, {len(paths) - len(todo)} reused, {len(todo)} to describe with {jobs} jobs")
    start = time.time()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(describe, [todo[i::jobs] for i in range(jobs)]))
    else:
        results = [describe(todo)]
    for names, descriptors in results:
        known.update(zip(names, descriptors))
    per_face = (time.time() - start) * jobs / max(len(todo), 1)
    present = {os.path.basename(p) for p in paths}
    names = sorted(n for n in known if n in present)  # reused entries of files no longer there are dropped
    if not names:
        raise SystemExit(f"no image in {data_dir} could be described")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez(partial, name=np.array(names), descriptor=np.stack([known[n] for n in names]),
             seconds_per_face_per_core=np.float32(per_face) if todo else np.float32(np.nan))
    os.replace(partial, out)
    print(f"{out}: {len(names)} descriptors ({1000 * per_face:.0f} ms per face per core)")
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--reuse", type=Path, help="an earlier descriptor file whose entries are kept")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    extract(args.data_dir, args.out, args.reuse, args.jobs)


if __name__ == "__main__":
    main()
