"""Evaluate a model on a labelled folder of whole photos, through the path users run (detect, crop, predict).

The labels are a CSV file with columns ``file`` (relative to the folder, or absolute), ``age`` (years), optionally
``gender`` (male/female, m/f or 0 = male / 1 = female, empty when unknown) and ``subject`` or ``group`` (the
person: photos of one person are not independent, so standard errors are bootstrapped over persons when given).
When a photo holds several faces, the largest is taken, as a person labelling a portrait would mean it.

Every labelled photo is accounted for: a prediction, a photo without a face (counted as *missed*), or an error
row (missing, empty or damaged file). Nothing is dropped unseen.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import AGE_DECADES

GENDER_WORDS = {"male": 0, "m": 0, "0": 0, "man": 0, "female": 1, "f": 1, "1": 1, "woman": 1}
BOOTSTRAP_SAMPLES = 2000


class LabelsError(ValueError):
    """A labels file that cannot be read, with the line and what is wrong."""


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    file: str  # as written in the labels file
    age: float
    gender: int | None  # 0 male, 1 female, None unknown
    subject: str | None


def read_labels(labels_csv: str | os.PathLike, folder: str | os.PathLike | None = None) -> list[LabelledPhoto]:
    """The rows of a labels CSV, checked. ``folder`` (default: the CSV's folder) anchors relative file names."""
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise LabelsError(f"{labels_csv}: no such labels file")
    base = Path(folder) if folder is not None else labels_csv.parent
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0].keys()) if rows else set()
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{labels_csv}: not a readable CSV file ({exc})") from None
    if not rows:
        raise LabelsError(f"{labels_csv}: no labelled photos (expected a header 'file,age[,gender][,subject]' and rows)")
    missing = {"file", "age"} - columns
    if missing:
        raise LabelsError(f"{labels_csv}: missing column(s) {', '.join(sorted(missing))}; "
                          f"found {', '.join(sorted(c for c in columns if c)) or 'none'}")
    subject_column = "subject" if "subject" in columns else ("group" if "group" in columns else None)
    photos, seen = [], set()
    for line, row in enumerate(rows, start=2):
        name = (row.get("file") or "").strip()
        if not name:
            raise LabelsError(f"{labels_csv}, line {line}: empty file name")
        if name in seen:
            raise LabelsError(f"{labels_csv}, line {line}: {name} is labelled twice")
        seen.add(name)
        try:
            age = float(row["age"])
        except (TypeError, ValueError):
            raise LabelsError(f"{labels_csv}, line {line}: age {row.get('age')!r} is not a number") from None
        if not math.isfinite(age) or not 0 <= age <= 130:
            raise LabelsError(f"{labels_csv}, line {line}: age {age:g} is outside 0-130")
        gender_text = (row.get("gender") or "").strip().lower()
        if gender_text and gender_text not in GENDER_WORDS:
            raise LabelsError(f"{labels_csv}, line {line}: gender {row['gender']!r} is not one of male/female, m/f, 0/1")
        subject = (row.get(subject_column) or "").strip() or None if subject_column else None
        path = Path(name) if os.path.isabs(name) else base / name
        photos.append(LabelledPhoto(path, name, age, GENDER_WORDS.get(gender_text) if gender_text else None, subject))
    return photos


def largest_face_index(boxes: Sequence[Sequence[int]]) -> int:
    """The index of the box with the largest area (the first of equal ones)."""
    areas = [int(b[2]) * int(b[3]) for b in boxes]
    return int(np.argmax(areas))


def predict_photos(predictor, photos: Sequence[LabelledPhoto], batch_size: int = 64,
                   progress: bool = False) -> pd.DataFrame:
    """One row per labelled photo: the largest face's prediction, ``missed`` (no face) or ``error``."""
    from ..data.images import ImageError, open_image

    records: list[dict[str, Any]] = []
    crops: list[np.ndarray] = []
    owners: list[int] = []
    iterator = photos
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:  # a progress bar only (tqdm is in the train extra)
            pass
        else:
            iterator = tqdm(photos, desc="photos", unit="photo")
    for photo in iterator:
        record = {"file": photo.file, "age": photo.age, "gender": photo.gender, "subject": photo.subject,
                  "status": "ok", "error": None, "faces": 0}
        try:
            image = open_image(photo.path)
            faces, boxes = predictor.faces_in(image, aligned=False)
        except ImageError as exc:
            record.update(status="error", error=str(exc))
            records.append(record)
            continue
        record["faces"] = len(faces)
        if not faces:
            record["status"] = "missed"
        else:
            chosen = largest_face_index(boxes)
            record["box"] = list(boxes[chosen])
            owners.append(len(records))
            crops.append(faces[chosen])
        records.append(record)
    if crops:
        predictions = predictor.predict_crops(np.stack(crops), batch_size=batch_size)
        for index, prediction in zip(owners, predictions):
            records[index].update(age_pred=prediction.age, age_low=prediction.age_low, age_high=prediction.age_high,
                                  p_female=(prediction.gender_probability if prediction.gender == "female"
                                            else 1 - prediction.gender_probability))
    frame = pd.DataFrame.from_records(records)
    for column in ("age_pred", "age_low", "age_high", "p_female", "box"):
        if column not in frame:
            frame[column] = np.nan
    return frame


def _bootstrap_se(values: np.ndarray, groups: np.ndarray | None, seed: int, samples: int) -> float | None:
    """Standard error of the mean of ``values``: over independent rows, or resampling whole groups (persons)."""
    n = len(values)
    if n < 2:
        return None
    if groups is None:
        return float(np.std(values, ddof=1) / math.sqrt(n))
    labels, index = np.unique(groups, return_inverse=True)
    if len(labels) < 2:
        return None
    sums = np.bincount(index, weights=values, minlength=len(labels))
    counts = np.bincount(index, minlength=len(labels)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(samples, len(labels)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return float(np.std(means, ddof=1))


def summarise(frame: pd.DataFrame, *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Any]:
    """The metrics of :func:`predict_photos` rows: coverage of the detector, age and gender, by decade and gender."""
    done = frame[frame["status"] == "ok"]
    groups = done["subject"].to_numpy() if done["subject"].notna().all() and len(done) else None
    error = done["age_pred"].to_numpy(float) - done["age"].to_numpy(float)
    abs_error = np.abs(error)

    def se(values, part_groups):
        return _bootstrap_se(values, part_groups, seed, samples)

    result: dict[str, Any] = {
        "photos": int(len(frame)), "n": int(len(done)),
        "missed": int((frame["status"] == "missed").sum()), "errors": int((frame["status"] == "error").sum()),
        "standard_errors": "bootstrap over subjects" if groups is not None else "independent photos",
        "subjects": int(frame["subject"].nunique()) if frame["subject"].notna().any() else None,
    }
    if len(done):
        inside = (done["age"] >= done["age_low"]) & (done["age"] <= done["age_high"])
        result.update({
            "age_mae": float(abs_error.mean()), "age_mae_se": se(abs_error, groups),
            "age_bias": float(error.mean()), "age_bias_se": se(error, groups),
            "age_range_coverage": float(inside.mean()),
            "age_range_below": float((done["age"] < done["age_low"]).mean()),
            "age_range_above": float((done["age"] > done["age_high"]).mean()),
        })
    decades = []
    for label, low, high in AGE_DECADES:
        mask = ((done["age"] >= low) & (done["age"] <= high)).to_numpy()
        if not mask.any():
            continue
        part_groups = groups[mask] if groups is not None else None
        decades.append({"group": label, "n": int(mask.sum()), "age_mae": float(abs_error[mask].mean()),
                        "age_mae_se": se(abs_error[mask], part_groups), "age_bias": float(error[mask].mean()),
                        "age_bias_se": se(error[mask], part_groups)})
    result["by_decade"] = decades
    labelled = done[done["gender"].notna()]
    if len(labelled):
        truth = labelled["gender"].to_numpy(int)
        correct = ((labelled["p_female"].to_numpy(float) >= 0.5).astype(int) == truth).astype(float)
        lab_groups = labelled["subject"].to_numpy() if groups is not None else None
        result["gender_n"] = int(len(labelled))
        result["gender_accuracy"] = float(correct.mean())
        result["gender_accuracy_se"] = se(correct, lab_groups)
        result["by_gender"] = [
            {"group": name, "n": int((truth == value).sum()), "gender_accuracy": float(correct[truth == value].mean()),
             "gender_accuracy_se": se(correct[truth == value], lab_groups[truth == value] if lab_groups is not None
                                      else None)}
            for value, name in ((1, "female"), (0, "male")) if (truth == value).any()]
    return result


def evaluate_photos(folder: str | os.PathLike, labels_csv: str | os.PathLike | None = None, *,
                    model_path: str | os.PathLike | None = None, predictor=None, progress: bool = False,
                    with_predictions: bool = False):
    """Metrics of a model on the labelled photos of ``folder`` (labels default: ``folder/labels.csv``)."""
    from ..serving.predict import Predictor

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    labels_csv = Path(labels_csv) if labels_csv else folder / "labels.csv"
    photos = read_labels(labels_csv, folder)
    predictor = predictor or Predictor.load(model_path)
    frame = predict_photos(predictor, photos, progress=progress)
    metrics = summarise(frame)
    metrics.update({"model": str(predictor.path), "folder": str(folder), "labels": str(labels_csv),
                    "failures": [{"file": r.file, "status": r.status, "error": r.error}
                                 for r in frame.itertuples() if r.status != "ok"]})
    return (metrics, frame) if with_predictions else metrics


def format_photo_report(metrics: dict[str, Any]) -> str:
    """A plain-text report of :func:`evaluate_photos` output."""

    def pm(value, se, scale=1.0, digits=2):
        text = f"{scale * value:.{digits}f}"
        return text + (f" +/- {scale * se:.{digits}f}" if se is not None else "")

    lines = [f"{metrics['model']} on {metrics['photos']} labelled photos of {metrics['folder']}",
             f"faces predicted {metrics['n']}, no face found {metrics['missed']}, unreadable {metrics['errors']}"
             f" (standard errors: {metrics['standard_errors']})"]
    if metrics["n"]:
        lines.append(f"age MAE {pm(metrics['age_mae'], metrics['age_mae_se'])} y, mean bias "
                     f"{metrics['age_bias']:+.2f} y; the age range holds the true age for "
                     f"{100 * metrics['age_range_coverage']:.1f} % ({100 * metrics['age_range_below']:.1f} % below, "
                     f"{100 * metrics['age_range_above']:.1f} % above)")
        lines.append(f"{'decade':>8}  {'n':>5}  {'age MAE':>14}  {'bias':>6}")
        for row in metrics["by_decade"]:
            lines.append(f"{row['group']:>8}  {row['n']:>5}  {pm(row['age_mae'], row['age_mae_se']):>14}  "
                         f"{row['age_bias']:>+6.2f}")
    if "gender_accuracy" in metrics:
        lines.append(f"gender accuracy {pm(metrics['gender_accuracy'], metrics['gender_accuracy_se'], 100, 1)} % "
                     f"on {metrics['gender_n']} photos with a gender label")
        for row in metrics["by_gender"]:
            lines.append(f"{row['group']:>8}  {row['n']:>5}  "
                         f"{pm(row['gender_accuracy'], row['gender_accuracy_se'], 100, 1)} %")
    for failure in metrics.get("failures", [])[:20]:
        lines.append(f"  {failure['file']}: {failure['error'] or 'no face found'}")
    if len(metrics.get("failures", [])) > 20:
        lines.append(f"  ... and {len(metrics['failures']) - 20} more (see --json)")
    return "\n".join(lines)
