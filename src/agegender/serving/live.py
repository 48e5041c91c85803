"""Live video: faces followed from frame to frame so that their estimates do not jitter.

Nothing here imports Streamlit or WebRTC, so all of it runs in plain unit tests:

- :class:`FaceTracker` matches the faces of a frame to those of earlier frames by the
  overlap (IoU) of their boxes and smooths each person's age, age range and P(female)
  over recent frames (exponential moving average, or the median of the last N frames).
- :class:`LiveAnnotator` is the per-frame work of the live mode: detect and predict all
  faces of a frame in one model call, update the tracker, draw the smoothed estimates.
- :func:`preload_srtp` works around a crash when WebRTC's SRTP library is imported into
  a process that already has TensorFlow loaded.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

Box = Sequence[float]  # x, y, w, h

#: The live mode's face detector: webcam faces are large and near, so every frame is searched
#: in one detector call: never tiled (not even HD frames, which the default detector tiles to
#: find small faces in group photos) and no second, padded search when a frame has no face.
LIVE_DETECTOR: dict[str, Any] = {"name": "blazeface", "tiles": False, "retry_padded": False}


#: Test-time views (mirror, zooms) multiply the model's work per face; in live video the average
#: over recent frames (FaceTracker) already smooths the estimates, so they are off there.
LIVE_TEST_TIME_VIEWS = False


def load_live_detector():
    from .faces import load_detector

    return load_detector(**LIVE_DETECTOR)


def live_predictor(model, card: dict, path=None, detector=None):
    """A :class:`agegender.serving.predict.Predictor` set up for video frames (see :data:`LIVE_DETECTOR`,
    :data:`LIVE_TEST_TIME_VIEWS`), sharing an already loaded model."""
    from .predict import Predictor

    predictor = Predictor(model, card, detector=detector or load_live_detector(), path=path)
    if not LIVE_TEST_TIME_VIEWS:
        predictor.without_test_time_views()
    return predictor


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    if aw <= 0 or ah <= 0 or bw <= 0 or bh <= 0:
        return 0.0
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def p_female_of(face) -> float:
    """P(female) of a prediction (which states the probability of its own gender)."""
    return face.gender_probability if face.gender == "female" else 1.0 - face.gender_probability


@dataclass
class TrackedFace:
    """A face's smoothed estimates; has the fields :func:`agegender.serving.annotate.annotate` draws."""

    track_id: int
    age: float
    age_low: float
    age_high: float
    gender: str
    gender_probability: float
    box: list[int]
    frames: int  # frames this person has been seen in

    def to_dict(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "age": round(self.age, 1), "age_low": round(self.age_low, 1),
                "age_high": round(self.age_high, 1), "gender": self.gender,
                "gender_probability": round(self.gender_probability, 3), "box": list(self.box),
                "frames": self.frames}


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # smoothed x, y, w, h
    history: deque  # rows of (age, age_low, age_high, p_female), newest last
    ema: np.ndarray  # EMA of the same four values
    frames: int = 1
    missed: int = 0


@dataclass
class FaceTracker:
    """Follow faces across frames and smooth their estimates.

    ``update(faces)`` takes one frame's predictions (objects with ``age``, ``age_low``,
    ``age_high``, ``gender``, ``gender_probability`` and ``box``) and returns one
    :class:`TrackedFace` per face of that frame, in the same order, with estimates
    smoothed over the person's recent frames:

    - ``method="ema"``: exponential moving average with weight ``alpha`` for the newest frame;
    - ``method="median"``: median of the last ``window`` frames.

    A face continues the track whose last box overlaps it most (IoU >= ``iou_threshold``;
    each track takes at most one face per frame). A track not seen for more than
    ``max_missed`` frames is forgotten; a face that matches no track starts a new one.
    The gender is smoothed as P(female) and stated from the smoothed value, so it cannot
    flip back and forth on one noisy frame. Boxes are smoothed with ``box_alpha``.
    """

    method: str = "ema"
    alpha: float = 0.3
    window: int = 15
    iou_threshold: float = 0.3
    max_missed: int = 10
    box_alpha: float = 0.6
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _next_id: int = field(default=1, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _current: list[TrackedFace] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if self.method not in ("ema", "median"):
            raise ValueError(f"method must be 'ema' or 'median', not {self.method!r}")
        if not 0 < self.alpha <= 1 or not 0 < self.box_alpha <= 1:
            raise ValueError("alpha and box_alpha must be in (0, 1]")
        if self.window < 1:
            raise ValueError("window must be at least 1")

    def configure(self, method: str | None = None, window: int | None = None, alpha: float | None = None) -> None:
        """Change the smoothing while frames keep coming (from another thread)."""
        with self._lock:
            new = FaceTracker(method=method or self.method, window=window or self.window,
                              alpha=alpha or self.alpha)  # validates
            self.method, self.alpha = new.method, new.alpha
            if new.window != self.window:
                self.window = new.window
                for track in self._tracks:
                    track.history = deque(track.history, maxlen=self.window)

    def reset(self) -> None:
        with self._lock:
            self._tracks, self._next_id, self._current = [], 1, []

    @property
    def current(self) -> list[TrackedFace]:
        """The faces of the last frame (a copy; safe to read from another thread)."""
        with self._lock:
            return list(self._current)

    def update(self, faces: Sequence[Any]) -> list[TrackedFace]:
        with self._lock:
            assignment = self._match([f.box for f in faces])
            out: list[TrackedFace] = []
            seen = set()
            for face, track in zip(faces, assignment):
                values = np.array([face.age, face.age_low, face.age_high, p_female_of(face)], dtype=float)
                box = np.asarray(face.box, dtype=float)
                if track is None:
                    track = _Track(self._next_id, box, deque([values], maxlen=self.window), values.copy())
                    self._next_id += 1
                    self._tracks.append(track)
                else:
                    track.history.append(values)
                    track.ema = self.alpha * values + (1 - self.alpha) * track.ema
                    track.box = self.box_alpha * box + (1 - self.box_alpha) * track.box
                    track.frames += 1
                track.missed = 0
                seen.add(id(track))
                out.append(self._smoothed(track))
            for track in self._tracks:
                if id(track) not in seen:
                    track.missed += 1
            self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
            self._current = list(out)
            return out

    def _match(self, boxes: Sequence[Box]) -> list[_Track | None]:
        """Greedy assignment by decreasing IoU: each face to at most one track and vice versa."""
        pairs = sorted(((iou(box, track.box), i, j) for i, box in enumerate(boxes)
                        for j, track in enumerate(self._tracks)), reverse=True)
        assignment: list[_Track | None] = [None] * len(boxes)
        used = set()
        for overlap, i, j in pairs:
            if overlap < self.iou_threshold:
                break
            if assignment[i] is None and j not in used:
                assignment[i] = self._tracks[j]
                used.add(j)
        return assignment

    def _smoothed(self, track: _Track) -> TrackedFace:
        if self.method == "median":
            age, low, high, p_female = np.median(np.stack(track.history), axis=0)
        else:
            age, low, high, p_female = track.ema
        female = p_female >= 0.5
        return TrackedFace(track_id=track.track_id, age=float(age), age_low=float(min(low, age)),
                           age_high=float(max(high, age)), gender="female" if female else "male",
                           gender_probability=float(p_female if female else 1 - p_female),
                           box=[int(round(v)) for v in track.box], frames=track.frames)


class LiveAnnotator:
    """The live mode's work on one video frame: predict, track, draw.

    All faces of a frame are predicted in one direct model call
    (:meth:`agegender.serving.predict.Predictor.predict_image`). ``lock`` serialises use of a
    predictor shared by several sessions (the detector need not be thread-safe).
    Errors never escape: a failing frame is returned unannotated and the error kept
    in ``last_error``.
    """

    def __init__(self, predictor, tracker: FaceTracker | None = None, lock: threading.Lock | None = None):
        self.predictor = predictor
        self.tracker = tracker or FaceTracker()
        self.lock = lock or threading.Lock()
        self.last_error: str | None = None
        self.frames = 0

    def process(self, frame_rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        from .annotate import annotate
        from .gender_confidence import GenderConfidence

        try:
            image = Image.fromarray(np.ascontiguousarray(frame_rgb[..., :3], dtype=np.uint8))
            with self.lock:
                faces = self.predictor.predict_image(image)
            tracked = self.tracker.update(sorted(faces, key=lambda f: f.box[0]))
            self.frames += 1
            self.last_error = None
            gender = GenderConfidence.from_card(getattr(self.predictor, "card", None))  # the card's calibration, if any
            return np.asarray(annotate(image, tracked, gender)) if tracked else frame_rgb
        except Exception as exc:  # a live stream must go on whatever one frame does
            self.last_error = f"{type(exc).__name__}: {exc}"
            return frame_rgb


def preload_srtp() -> None:
    """Import ``pylibsrtp`` so that it uses its own OpenSSL, not TensorFlow's BoringSSL.

    pylibsrtp's extension links OpenSSL statically but leaves its symbols
    interposable, and TensorFlow loads ``libtensorflow_framework.so.2`` (which
    contains BoringSSL under the same symbol names) with ``RTLD_GLOBAL``. Importing
    pylibsrtp (and hence aiortc / streamlit-webrtc) after TensorFlow then binds
    pylibsrtp's OpenSSL calls to BoringSSL and the process crashes (SIGSEGV in
    ``srtp_init``). Loading the extension with ``RTLD_DEEPBIND`` makes it prefer its
    own symbols. Call this before importing aiortc or streamlit_webrtc; harmless when
    pylibsrtp is already imported or absent.
    """
    if "pylibsrtp" in sys.modules or not hasattr(os, "RTLD_DEEPBIND"):
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND | os.RTLD_NOW)
    try:
        import pylibsrtp  # noqa: F401
    except ImportError:
        pass
    finally:
        sys.setdlopenflags(flags)
