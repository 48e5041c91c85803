"""Prediction: a model loaded once, faces predicted in batches, per-image errors kept per image."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from ..config import default_model_path
from ..data.images import ImageError, image_files_in, open_image, to_model_input
from .gender_confidence import GenderConfidence
from .inference import age_ranges, card_range_quantiles, predict_arrays, tta_settings
from .modelio import input_resize, load_serving_model

if TYPE_CHECKING:
    import keras

    from .litert import TFLiteModel


#: Photos :meth:`Predictor.predict_files` reads, predicts and lets go of at a time.
PHOTOS_PER_CHUNK = 256


def _is_folder(path: str | os.PathLike) -> bool:
    return bool(str(path)) and Path(path).is_dir()  # Path("") would be the working directory


def expand_folders(paths: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    """``paths`` with each folder replaced by the image files directly inside it; a folder without any stays."""
    expanded: list[str | os.PathLike] = []
    for path in paths:
        try:
            inside = image_files_in(path) if _is_folder(path) else []
        except OSError:  # an unreadable folder: kept, and reported as a folder without images
            inside = []
        expanded.extend(inside or [path])
    return expanded


@dataclass
class FacePrediction:
    age: float
    age_low: float
    age_high: float
    gender: str  # "male" | "female"
    gender_probability: float  # probability of the stated gender
    box: list[int]  # x, y, w, h in pixels of the original image

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class Predictor:
    """A model and its input spec; optionally a face detector for whole photos."""

    def __init__(self, model: "keras.Model | TFLiteModel", card: dict, detector=None,
                 path: str | os.PathLike | None = None):
        self.model, self.card, self.path = model, card, path
        self.image_size = int(card["input"]["image_size"])
        self.color_mode = card["input"]["color_mode"]
        self.resize = input_resize(card)
        self.views = tta_settings(card)  # test-time views averaged per face: keyword arguments of predict_arrays
        self._detector = detector
        test = card.get("metrics", {}).get("test", {})
        self._fallback_halfwidth = float(test.get("age_mae", 5.0))
        self.range_quantiles = card_range_quantiles(card)  # those the card's metrics measured the range with
        self.gender_confidence = GenderConfidence.from_card(card)  # as the app shows gender (calibrated, uncertain)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, detector=None, num_threads: int | None = None) -> Predictor:
        path = path or default_model_path()
        model, card = load_serving_model(path, num_threads=num_threads)
        return cls(model, card, detector, path)

    def without_test_time_views(self) -> None:
        """Predict from each face alone (no mirror, no zooms): faster, for video frames."""
        self.views = tta_settings({})

    @property
    def detector(self):
        if self._detector is None:
            from .faces import load_detector

            self._detector = load_detector()
        return self._detector

    # -- core: crops -> predictions -------------------------------------------------------------
    def prepare(self, face_rgb: np.ndarray | Image.Image) -> np.ndarray:
        """A face crop (any size, RGB) as the model's uint8 input."""
        return to_model_input(face_rgb, self.image_size, self.color_mode, self.resize)

    def predict_crops(self, crops: np.ndarray, boxes: Sequence[Sequence[int]] | None = None,
                      batch_size: int = 64) -> list[FacePrediction]:
        """Predictions for a stack of prepared crops (N, size, size, C), in one direct call per batch."""
        if len(crops) == 0:
            return []
        out = predict_arrays(self.model, crops, batch_size=batch_size, **self.views)
        ranges = age_ranges(out["age_dist"], self.range_quantiles) if "age_dist" in out else None
        results = []
        for i in range(len(crops)):
            age, p_female = float(out["age"][i]), float(out["p_female"][i])
            if ranges is not None:
                low, high = float(ranges[0][i]), float(ranges[1][i])
            else:
                low, high = age - self._fallback_halfwidth, age + self._fallback_halfwidth
            female = p_female >= 0.5
            box = list(boxes[i]) if boxes is not None else [0, 0, 0, 0]
            results.append(FacePrediction(age=age, age_low=max(0.0, low), age_high=high,
                                          gender="female" if female else "male",
                                          gender_probability=p_female if female else 1 - p_female, box=box))
        return results

    # -- images -------------------------------------------------------------------------------------
    def faces_in(self, image: Image.Image, aligned: bool) -> tuple[list[np.ndarray], list[list[int]]]:
        """Prepared crops and their boxes: the whole image when aligned, else every detected face."""
        if aligned:
            return [self.prepare(image)], [[0, 0, image.width, image.height]]
        from .faces import crop_face

        rgb = np.asarray(image)
        faces = self.detector.detect(rgb)
        return [self.prepare(crop_face(rgb, face)) for face in faces], [list(face.box) for face in faces]

    def predict_image(self, image: Image.Image, aligned: bool = False) -> list[FacePrediction]:
        crops, boxes = self.faces_in(image, aligned)
        return self.predict_crops(np.stack(crops), boxes) if crops else []

    def predict_files(self, paths: Sequence[str | os.PathLike], aligned: bool = False,
                      annotate_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """One result per image: ``{"path", "faces": [...]}`` or ``{"path", "error"}``.

        Each face is :class:`FacePrediction`'s fields plus, as the app shows them, ``gender_shown`` (``"male"``,
        ``"female"`` or ``"uncertain"``) and ``gender_confidence`` (the calibrated probability of the gender the
        face leans to; see :mod:`.gender_confidence`).

        A folder stands for the image files directly inside it (:func:`image_files_in`); one without any gives
        an error result. Images are taken :data:`PHOTOS_PER_CHUNK` at a time, their faces predicted together in
        batches, so memory holds one chunk's crops (and photos, with ``annotate_dir``), not the whole folder's.
        """
        paths = expand_folders(paths)
        results: list[dict[str, Any]] = []
        written: set[str] = set()  # annotated copies' names so far: photos of one name in two folders keep both
        for start in range(0, len(paths), PHOTOS_PER_CHUNK):
            results += self._predict_chunk(paths[start:start + PHOTOS_PER_CHUNK], aligned, annotate_dir, written)
        return results

    def _predict_chunk(self, paths: Sequence[str | os.PathLike], aligned: bool,
                       annotate_dir: str | os.PathLike | None, written: set[str]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        crops: list[np.ndarray] = []
        owners: list[tuple[int, list[int]]] = []
        images: dict[int, Image.Image] = {}
        for index, path in enumerate(paths):
            try:
                if _is_folder(path):
                    raise ImageError(f"{path}: a folder with no image files in it")
                image = open_image(path)
                faces, boxes = self.faces_in(image, aligned)
            except ImageError as exc:
                results.append({"path": str(path), "error": str(exc)})
                continue
            results.append({"path": str(path), "faces": []})
            if annotate_dir:
                images[index] = image
            crops.extend(faces)
            owners.extend((index, box) for box in boxes)
        predictions = self.predict_crops(np.stack(crops), [b for _, b in owners]) if crops else []
        faces_of: dict[int, list[FacePrediction]] = {}
        for (index, _), prediction in zip(owners, predictions):
            results[index]["faces"].append(self._face_result(prediction))
            faces_of.setdefault(index, []).append(prediction)
        for result in results:
            if "faces" in result and not result["faces"]:
                result["note"] = "no face found"
        if annotate_dir:
            from .annotate import annotate

            Path(annotate_dir).mkdir(parents=True, exist_ok=True)
            for index, image in images.items():
                out = Path(annotate_dir) / _annotated_name(Path(paths[index]).stem, written)
                annotate(image, faces_of.get(index, []), self.gender_confidence).save(out, quality=92)
                results[index]["annotated"] = str(out)
        return results

    def _face_result(self, prediction: FacePrediction) -> dict[str, Any]:
        p_female = prediction.gender_probability if prediction.gender == "female" else 1 - prediction.gender_probability
        call = self.gender_confidence.call(p_female)
        return {**prediction.to_dict(), "gender_shown": call.gender, "gender_confidence": round(call.confidence, 3)}


def _annotated_name(stem: str, written: set[str]) -> str:
    """``STEM_annotated.jpg``, or ``STEM_annotated-2.jpg``, ... if an earlier photo of the run took that name."""
    name, number = f"{stem}_annotated.jpg", 1
    while name in written:
        number += 1
        name = f"{stem}_annotated-{number}.jpg"
    written.add(name)
    return name


def format_results(results: list[dict[str, Any]]) -> str:
    """A readable table of :meth:`Predictor.predict_files` results."""
    lines = [f"{'image':<40} {'face':>4} {'age':>5} {'range':>9} {'gender':>9} {'conf.':>5}  box"]
    for result in results:
        name = os.path.basename(result["path"])[:40]
        if "error" in result:
            lines.append(f"{name:<40} error: {result['error']}")
        elif not result["faces"]:
            lines.append(f"{name:<40} no face found")
        for i, face in enumerate(result.get("faces", [])):
            lines.append(f"{name:<40} {i + 1:>4} {face['age']:>5.1f} {face['age_low']:>4.0f}-{face['age_high']:<4.0f} "
                         f"{face.get('gender_shown', face['gender']):>9} "
                         f"{face.get('gender_confidence', face['gender_probability']):>5.2f}  {face['box']}")
    return "\n".join(lines)
