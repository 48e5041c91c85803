"""Compare face detectors on the wild_samples photos: recall, false positives, speed.

    python research/probes/compare_face_detectors.py ../shared/datasets/wild_samples [--details]

For each detector (see ``CANDIDATES``) it prints one markdown table row:

- single: persons found in the 19 one-person photos (``known_persons/``), and false positives
  there (any detection that is not the person's face);
- group: faces found in the 5 group photos (``group_photos/faces.csv``) against the faces
  expected, optional faces found (a partly visible child in ``fr_obama_and_biden.jpg``), and
  false positives;
- the same recall on every photo shrunk to fit 640x480 (what the live mode sees);
- speed on those 640x480 frames: median wall time per ``detect`` call, and process CPU time per
  call (robust when other jobs share the machine). OpenCV, TensorFlow and TFLite are limited to
  one thread.

Ground truth: the face boxes below were taken from the detectors' agreement and checked by
eye on a contact sheet. A detection matches a face when its centre lies inside the face's box
and its size is 0.4x-3x the box's (detectors frame faces differently); one detection per face.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agegender.data.images import open_image  # noqa: E402
from agegender.serving.faces import load_detector  # noqa: E402

cv2.setNumThreads(1)

#: x, y, w, h in pixels of the EXIF-oriented image; one face per one-person photo.
FACES = {
    "fnp_angelina_jolie.jpg": [(564, 379, 734, 734)],
    "fnp_kate_siegel.jpg": [(526, 158, 252, 252)],
    "fnp_paul_rudd.jpg": [(114, 472, 1344, 1344)],
    "fnp_shea_whigham.jpg": [(810, 433, 479, 479)],
    "fr_alex-lacamoire.png": [(172, 139, 176, 176)],
    "fr_test_alex_lacamoire1.jpg": [(603, 173, 366, 366)],
    "fr_biden.jpg": [(428, 235, 313, 313)],
    "fr_train_biden_biden2.jpg": [(381, 244, 532, 532)],
    "fr_lin-manuel-miranda.png": [(247, 165, 334, 334)],
    "fr_obama.jpg": [(351, 129, 287, 287)],
    "fr_obama2.jpg": [(141, 273, 342, 343)],
    "fr_obama3.jpg": [(646, 310, 293, 293)],
    "fr_test_johnsnow_test1.jpg": [(262, 172, 192, 192)],
    "fr_train_kit_harington_john1.jpeg": [(673, 96, 138, 138)],
    "fr_train_kit_harington_john2.jpeg": [(277, 84, 196, 196)],
    "fr_train_rose_leslie_img1.jpg": [(599, 102, 279, 278)],
    "fr_train_rose_leslie_img2.jpg": [(150, 153, 299, 299)],
    "insightface_Tom_Hanks_54745.png": [(7, 15, 96, 96)],
    "skimage_astronaut.png": [(172, 67, 109, 110)],
    "fnp_multiface.jpg": [(216, 260, 91, 92), (421, 142, 95, 95), (548, 58, 92, 92), (613, 207, 87, 87),
                          (712, 477, 91, 92), (846, 449, 106, 105)],
    "insightface_t1.jpg": [(61, 284, 104, 104), (264, 167, 103, 103), (451, 282, 128, 127), (727, 361, 107, 107),
                           (865, 71, 134, 134), (1114, 285, 113, 113)],
    "fr_kit_with_rose.jpg": [(72, 119, 88, 89), (244, 92, 107, 107)],
    "fr_two_people.jpg": [(242, 58, 156, 156), (789, 78, 167, 167)],
    "fr_obama_and_biden.jpg": [(732, 426, 212, 212), (1128, 388, 204, 204)],
}
#: Faces a detector may find or miss: neither recall nor false positives.
OPTIONAL = {
    "fr_obama_and_biden.jpg": [(1595, 1060, 169, 169),  # the child, partly hidden
                               (1880, 500, 120, 500)],  # the person cut by the right edge
}

#: key -> (label, detector name, keyword arguments)
CANDIDATES = {
    "haar": ("haar: OpenCV frontalface_default (1.1, 5)", "haar", {}),
    "blazeface": ("blazeface: full-range, tiles from 1000 px (default)", "blazeface", {}),
    "blazeface-tiled": ("blazeface: full-range, always tiled", "blazeface", {"tile_min_side": 0}),
    "blazeface-notiles": ("blazeface: full-range, never tiled", "blazeface", {"tiles": False}),
    "blazeface-short": ("blazeface: short-range, always tiled", "blazeface_short", {"tile_min_side": 0}),
    "mtcnn": ("mtcnn: ipazc mtcnn 1.0.0 on Keras 3, score >= 0.9", "mtcnn", {}),
}


def matches(det, face, tolerance=(0.4, 3.0)) -> bool:
    cx, cy = det.box[0] + det.box[2] / 2, det.box[1] + det.box[3] / 2
    x, y, w, h = face
    ratio = np.sqrt(det.box[2] * det.box[3] / (w * h))
    return x <= cx <= x + w and y <= cy <= y + h and tolerance[0] <= ratio <= tolerance[1]


def score(dets, faces, optional, scale=1.0):
    """(found, optional found, false positives) with boxes scaled by ``scale``."""
    faces = [tuple(v * scale for v in f) for f in faces]
    optional = [tuple(v * scale for v in f) for f in optional]
    free = list(dets)
    found = 0
    for face in faces:
        hit = next((d for d in free if matches(d, face)), None)
        if hit is not None:
            found += 1
            free.remove(hit)
    opt = 0
    for face in optional:
        hits = [d for d in free if matches(d, face, (0.2, 5.0))]
        opt += bool(hits)
        for d in hits:
            free.remove(d)
    return found, opt, len(free)


def shrink(image: np.ndarray, width: int = 640, height: int = 480) -> tuple[np.ndarray, float]:
    s = min(width / image.shape[1], height / image.shape[0], 1.0)
    if s == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), s


def load_photos(folder: Path):
    singles = [row["file"] for row in csv.DictReader(open(folder / "known_persons" / "labels.csv"))]
    groups = {row["file"]: row["expected_faces"] for row in csv.DictReader(open(folder / "group_photos" / "faces.csv"))}
    photos = []
    for name in singles:
        photos.append(("single", name, np.asarray(open_image(folder / "known_persons" / name))))
    for name in groups:
        photos.append(("group", name, np.asarray(open_image(folder / "group_photos" / name))))
    return photos, groups


def evaluate(detector, photos, repeats: int, details: bool):
    totals = {k: 0 for k in ("s_found", "s_fp", "g_found", "g_opt", "g_fp", "s640", "g640", "fp640")}
    walls, cpu, calls = [], 0.0, 0
    for kind, name, image in photos:
        faces, optional = FACES[name], OPTIONAL.get(name, [])
        dets = detector.detect(image)
        found, opt, fp = score(dets, faces, optional)
        small, s = shrink(image)
        dets640 = detector.detect(small)
        found640, _, fp640 = score(dets640, faces, optional, s)
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            detector.detect(small)
            walls.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
            calls += 1
        prefix = "s" if kind == "single" else "g"
        totals[f"{prefix}_found"] += found
        totals[f"{prefix}_fp"] += fp
        totals["g_opt"] += opt if kind == "group" else 0
        totals[f"{prefix}640"] += found640
        totals["fp640"] += fp640
        if details:
            print(f"    {name:36s} faces {len(faces)} found {found} optional {opt} fp {fp} | "
                  f"640: found {found640} fp {fp640}", flush=True)
    totals["ms_wall"] = 1000 * statistics.median(walls)
    totals["ms_cpu"] = 1000 * cpu / calls
    return totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="the wild_samples folder")
    parser.add_argument("--detectors", default=",".join(CANDIDATES), help="comma-separated keys of CANDIDATES")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per 640x480 frame")
    parser.add_argument("--details", action="store_true", help="print each photo's counts")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # single-thread timings for every detector
    tf.config.threading.set_inter_op_parallelism_threads(1)
    photos, groups = load_photos(args.folder)
    n_single = sum(1 for kind, *_ in photos if kind == "single")
    n_group = sum(len(FACES[name]) for kind, name, _ in photos if kind == "group")
    n_opt = sum(len(OPTIONAL.get(name, [])) for kind, name, _ in photos if kind == "group")
    print(f"wild_samples: {n_single} one-person photos, {len(groups)} group photos with {n_group} faces "
          f"(+{n_opt} optional: partly visible); OpenCV {cv2.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    header = ("| detector | single found | single FP | group found | optional | group FP "
              "| 640x480: single | 640x480: group | 640x480: FP | ms/frame (wall, median) | ms/frame (CPU) |")
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for key in args.detectors.split(","):
        label, name, kwargs = CANDIDATES[key]
        try:
            detector = load_detector(name, **kwargs)
            detector.detect(np.full((480, 640, 3), 128, np.uint8))  # warm-up (graph tracing, allocation)
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append(f"| {label} | unavailable: {exc} |" + " |" * 9)
            print(rows[-1], flush=True)
            continue
        if args.details:
            print(f"  {label}:", flush=True)
        t = evaluate(detector, photos, args.repeats, args.details)
        rows.append(f"| {label} | {t['s_found']}/{n_single} | {t['s_fp']} | {t['g_found']}/{n_group} | "
                    f"{t['g_opt']}/{n_opt} | {t['g_fp']} | {t['s640']}/{n_single} | {t['g640']}/{n_group} | "
                    f"{t['fp640']} | {t['ms_wall']:.1f} | {t['ms_cpu']:.1f} |")
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
