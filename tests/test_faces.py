"""Face detection (agegender.serving.faces): the default BlazeFace detector, crops, and the input contract.

Real photos come from ``../shared/datasets/wild_samples`` when it is present (skipped with the
reason otherwise); the self-contained tests use the committed assets and the UTKFace crops of
``data/sample``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from agegender.data.images import open_image
from agegender.serving.faces import (CROP_PARAMS, DETECTORS, CropParams, Face, crop_box, crop_face, load_detector,
                             to_rgb)

pytestmark = pytest.mark.runtime  # no TensorFlow needed (make test-runtime)

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE = REPO / "data" / "sample"
WILD = Path(os.environ.get("WILD_SAMPLES_DIR", REPO.parent / "shared" / "datasets" / "wild_samples"))

needs_wild = pytest.mark.skipif(not (WILD / "known_persons").is_dir(),
                                reason=f"wild_samples photos not found at {WILD} (set WILD_SAMPLES_DIR)")


def sample_crops(n: int) -> list[np.ndarray]:
    if not SAMPLE.is_dir():
        pytest.skip(f"no UTKFace sample crops at {SAMPLE}")
    paths = sorted(SAMPLE.glob("*.jpg.chip.jpg"))[:n]
    if len(paths) < n:
        pytest.skip(f"fewer than {n} UTKFace sample crops in {SAMPLE}")
    return [np.asarray(open_image(p)) for p in paths]


@pytest.fixture(scope="module")
def detector():
    try:
        return load_detector()
    except RuntimeError as exc:  # the weights' package is missing
        pytest.skip(str(exc))


def embed(crop: np.ndarray, x: int, y: int, size=(480, 640), value: int = 128) -> np.ndarray:
    """``crop`` pasted at (x, y) on a flat canvas (clipped at the canvas edges)."""
    canvas = np.full((*size, 3), value, np.uint8)
    h, w = crop.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(size[1], x + w), min(size[0], y + h)
    canvas[y0:y1, x0:x1] = crop[y0 - y:y1 - y, x0 - x:x1 - x]
    return canvas


def box_iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def assert_inside(face: Face, image: np.ndarray) -> None:
    x, y, w, h = face.box
    assert all(isinstance(v, int) for v in face.box)
    assert x >= 0 and y >= 0 and w > 0 and h > 0
    assert x + w <= image.shape[1] and y + h <= image.shape[0]


# -- real photos -----------------------------------------------------------------------------------
@needs_wild
@pytest.mark.parametrize("name", ["fr_obama.jpg", "skimage_astronaut.png", "fnp_shea_whigham.jpg",
                                  "insightface_Tom_Hanks_54745.png"])
def test_one_face_in_one_person_photos(detector, name):
    image = np.asarray(open_image(WILD / "known_persons" / name))
    faces = detector.detect(image)
    assert len(faces) == 1, [f.box for f in faces]  # shea_whigham: the festival logos are not faces
    assert_inside(faces[0], image)
    assert faces[0].score >= 0.5 and faces[0].landmarks.shape == (6, 2)


@needs_wild
@pytest.mark.parametrize("name, expected", [("fnp_multiface.jpg", 6), ("insightface_t1.jpg", 6),
                                            ("fr_kit_with_rose.jpg", 2), ("fr_two_people.jpg", 2)])
def test_group_photos_counted_left_to_right(detector, name, expected):
    image = np.asarray(open_image(WILD / "group_photos" / name))
    faces = detector.detect(image)
    assert len(faces) == expected
    centres = [f.center[0] for f in faces]
    assert centres == sorted(centres)
    for face in faces:
        assert_inside(face, image)


def test_committed_assets(detector):
    assert len(detector.detect(np.asarray(open_image(ASSETS / "face.jpg")))) == 1
    faces = detector.detect(np.asarray(open_image(ASSETS / "group3.jpg")))
    assert len(faces) == 3
    assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces)


# -- synthetic inputs from UTKFace crops -----------------------------------------------------------
def test_utkface_crop_found_where_it_was_put(detector):
    for i, crop in enumerate(sample_crops(4)):
        x, y = 60 + 110 * i, 40 + 50 * i
        faces = detector.detect(embed(crop, x, y))
        assert len(faces) == 1
        # the crop that crop_face cuts is close to the UTKFace frame it came from
        cx, cy, side, _ = crop_box(faces[0])
        assert box_iou((cx - side / 2, cy - side / 2, side, side), (x, y, 200, 200)) > 0.7


def test_tight_crop_found_by_the_padded_retry(detector):
    crop = sample_crops(1)[0]
    faces = detector.detect(crop)  # the face touches the edges: found on the second, padded pass
    assert len(faces) == 1
    assert_inside(faces[0], crop)
    assert box_iou(faces[0].box, (0, 0, 200, 200)) > 0.6


def test_large_photo_is_downscaled_and_boxes_map_back(detector):
    image = embed(sample_crops(1)[0], 200, 100)
    small = detector.detect(image)
    big_image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)  # 2560x1920 > max_side
    big = detector.detect(big_image)
    assert len(small) == len(big) == 1
    assert box_iou(tuple(v * 4 for v in small[0].box), big[0].box) > 0.8
    eyes_big, eyes_small = np.asarray(big[0].eyes) / 4, np.asarray(small[0].eyes)
    assert np.abs(eyes_big - eyes_small).max() < 0.05 * small[0].box[2]


def test_box_clipped_at_the_image_border(detector):
    crop = sample_crops(1)[0]
    image = embed(crop, -40, 150, size=(400, 400))  # the left fifth of the face is cut off
    faces = detector.detect(image)
    assert len(faces) == 1
    assert faces[0].box[0] == 0
    assert_inside(faces[0], image)
    out = crop_face(image, faces[0], size=96)  # the part outside the image is filled with mid-grey
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8


def test_rotation_alignment_levels_the_eyes(detector):
    def eye_angle(face: Face) -> float:
        (lx, ly), (rx, ry) = face.eyes
        return float(np.degrees(np.arctan2(ry - ly, rx - lx)))

    rotation = cv2.getRotationMatrix2D((320, 240), -20, 1.0)  # 20 degrees clockwise on screen
    tilts, aligned, plain = [], [], []
    for crop in sample_crops(5)[1:]:  # (the first sample, a 100-year-old, has unsteady eye points)
        canvas = embed(crop, 220, 140)
        assert abs(eye_angle(detector.detect(canvas)[0])) < 6  # UTKFace crops are eye-aligned
        tilted_image = cv2.warpAffine(canvas, rotation, (640, 480), borderValue=(128, 128, 128))
        tilted = detector.detect(tilted_image)
        assert len(tilted) == 1
        tilts.append(eye_angle(tilted[0]))
        # detected again inside the crops: level eyes in the aligned crop, still tilted in the plain one
        aligned.append(eye_angle(detector.detect(crop_face(tilted_image, tilted[0], size=160))[0]))
        plain.append(eye_angle(detector.detect(crop_face(tilted_image, tilted[0], size=160, align=False))[0]))
    assert 15 < np.median(tilts) < 26
    assert abs(np.median(aligned)) < 5
    assert np.median(plain) > 12


# -- no face -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["grey", "noise", "gradient", "tiny"])
def test_no_face_gives_an_empty_list(detector, kind):
    rng = np.random.default_rng(0)
    image = {"grey": np.full((480, 640, 3), 128, np.uint8),
             "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
             "gradient": np.broadcast_to(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None],
                                         (480, 640, 3)).copy(),
             "tiny": np.full((4, 4, 3), 200, np.uint8)}[kind]
    assert detector.detect(image) == []


# -- input contract ------------------------------------------------------------------------------------
def test_gray_and_rgba_inputs_are_converted(detector):
    rgb = np.asarray(open_image(ASSETS / "group3.jpg"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    counts = [len(detector.detect(x)) for x in (rgb, gray, gray[..., None], rgba)]
    assert counts == [3, 3, 3, 3]
    assert to_rgb(gray).shape == rgb.shape and to_rgb(rgba).shape == rgb.shape


@pytest.mark.parametrize("bad", [np.zeros((48, 48, 3), np.float32), np.zeros((48, 48, 2), np.uint8),
                                 np.zeros((2, 48, 48, 3), np.uint8)])
def test_unsupported_inputs_raise(detector, bad):
    with pytest.raises(ValueError):
        detector.detect(bad)


# -- crops -------------------------------------------------------------------------------------------
def test_crop_shapes():
    image = np.zeros((300, 400, 3), np.uint8)
    face = Face((100, 80, 90, 90), 0.9)
    side = crop_box(face)[2]
    native = crop_face(image, face)
    assert native.shape == (round(side), round(side), 3)
    assert crop_face(image, face, size=64).shape == (64, 64, 3)
    assert crop_face(image, face, size=256).shape == (256, 256, 3)
    assert crop_face(image[..., 0], face, size=64).shape == (64, 64)


def test_crop_without_landmarks_is_the_calibrated_square():
    image = np.arange(300 * 400 * 3, dtype=np.uint32).reshape(300, 400, 3).astype(np.uint8)
    face = Face((100, 80, 100, 100), 0.9, source="blazeface")
    params = CropParams(scale=1.5, dx=0.1, dy=-0.2)
    cx, cy, side, angle = crop_box(face, params)
    assert (cx, cy, side, angle) == pytest.approx((160.0, 110.0, 150.0, 0.0))
    out = crop_face(image, face, params=params)
    assert np.array_equal(out, image[35:185, 85:235])  # integer-aligned: an exact cut


def test_crop_at_the_border_fills_with_mid_grey():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = 255
    face = Face((0, 20, 40, 40), 0.9)
    out = crop_face(image, face, size=40, params=CropParams(scale=2.0))  # reaches 20 px left of the image
    assert out.shape == (40, 40, 3)
    assert (out[:, :8] == 128).all()  # mid-grey outside the photo, not the photo's white edge repeated
    assert (out[:, 12:33] == 255).all()  # the photo itself


def test_every_detector_has_crop_parameters():
    assert set(DETECTORS) <= set(CROP_PARAMS)
    for params in CROP_PARAMS.values():
        assert 0.8 < params.scale < 2.0 and abs(params.dx) < 0.3 and abs(params.dy) < 0.3


# -- detectors -----------------------------------------------------------------------------------------
def test_unknown_detector_name():
    with pytest.raises(ValueError, match="unknown face detector"):
        load_detector("nope")


def test_haar_works_or_says_why():
    try:
        haar = load_detector("haar")
    except RuntimeError as exc:
        assert "Haar" in str(exc)
        return
    faces = haar.detect(np.asarray(open_image(ASSETS / "face.jpg")))
    assert len(faces) >= 1 and faces[0].landmarks is None and faces[0].source == "haar"


def test_one_detector_shared_by_threads(detector):
    images = [np.asarray(open_image(ASSETS / name)) for name in ("face.jpg", "group3.jpg")] * 4
    expected = [[f.box for f in detector.detect(im)] for im in images]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = [f.box for f in detector.detect(images[i])]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(images))] == expected
