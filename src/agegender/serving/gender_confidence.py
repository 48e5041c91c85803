"""A calibrated gender confidence, and the threshold below which the gender is shown as "uncertain".

A model's P(female) is often over-confident: the default model says 100 % for almost every face, while it is right
for only about 80 % of children. This module fits a calibration of that probability on the val split and chooses a
threshold on the calibrated confidence, so that what is shown means what it says:

- **Calibration** (:func:`fit_calibration`): ``P(female) = sigmoid(a * z + b)`` where ``z`` is the logit of the
  model's P(female), fitted on val by maximum likelihood. ``method="temperature"`` fixes ``b = 0`` (temperature
  ``T = 1 / a``), so that the label is the model's and only the confidence changes; ``method="platt"`` fits both.
- **Confidence**: the calibrated probability of the stated gender, ``max(p, 1 - p)``, in [0.5, 1].
- **Threshold** (:func:`choose_threshold`): the smallest ``t`` among 0.5 and the confidences seen on val such that,
  in every age band (:data:`BAND_RULE`), the val faces with confidence ``>= t`` are at least ``target`` (95 %)
  correct. A band with no face left at or above ``t`` counts as meeting it. Faces below ``t`` are "uncertain".

:func:`calibrate_model` measures all this for a model on its val and test splits (``agegender calibrate-gender``)
and :func:`write_to_card` stores it as ``card["gender_confidence"]``; serving reads it back with
:meth:`GenderConfidence.from_card` (none in the card: the model's probability as it is, never "uncertain").

Importing this module needs only NumPy; measuring a model imports the data and model loaders when called.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import AGE_BANDS

#: The share of the faces given a gender that must be right, in every age band ...
TARGET_ACCURACY = 0.95
#: ... at the lower end of a one-sided Wilson interval on val, as strict as val allows: from z = 1.645 (95 %) down
#: in steps of 0.05 to the first z at which some threshold qualifies. With ~300 children on val, a threshold that
#: just reaches 95 % there (z = 0) gave 89 % on test; the interval leaves room for that noise.
WILSON_Z_MAX, WILSON_Z_STEP = 1.645, 0.05
#: Probabilities are clipped to this distance from 0 and 1 before taking logits (float32 outputs saturate at 1.0).
EPSILON = 1e-7
METHODS = ("temperature", "platt")
BAND_RULE = ("bands of the true age in whole years, inclusive: " + ", ".join(label for label, _, _ in AGE_BANDS)
             + "; the threshold is the smallest t among 0.5 and the val confidences such that in every band the val "
               "faces with calibrated confidence >= t are at least {target:.0%} correct at the lower end of a "
               "one-sided Wilson interval, the strictest (z from 1.645 down in steps of 0.05) at which such a t "
               "exists (a band with no face at or above t counts as meeting it); faces below t are shown as "
               "'uncertain'")


# -- the calibration ------------------------------------------------------------------------------------
def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def _nll(a: float, b: float, z: np.ndarray, y: np.ndarray) -> float:
    s = a * z + b
    return float(np.mean(np.logaddexp(0.0, s) - y * s))  # -log-likelihood of y under sigmoid(s), per face


def fit_calibration(p_female: np.ndarray, is_female: np.ndarray, method: str = "temperature",
                    iterations: int = 100) -> tuple[float, float]:
    """``(a, b)`` maximising the likelihood of ``is_female`` under ``sigmoid(a * logit(p_female) + b)``.

    Newton's method with step halving (the negative log-likelihood is convex in ``(a, b)``); ``method="temperature"``
    keeps ``b = 0``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    z = logit(p_female)
    y = np.asarray(is_female, dtype=np.float64)
    if len(z) == 0 or len(z) != len(y):
        raise ValueError(f"need as many labels as probabilities, and some: got {len(z)} and {len(y)}")
    features = np.stack([z, np.ones_like(z)], axis=1) if method == "platt" else z[:, None]
    theta = np.array([1.0, 0.0]) if method == "platt" else np.array([1.0])
    ridge = 1e-6 * np.eye(len(theta))  # keeps the Newton step defined when the faces are separable

    def loss(t: np.ndarray) -> float:
        return _nll(t[0], t[1] if len(t) > 1 else 0.0, z, y)

    current = loss(theta)
    for _ in range(iterations):
        p = sigmoid(features @ theta)
        gradient = features.T @ (p - y) / len(y)
        hessian = (features * (p * (1 - p))[:, None]).T @ features / len(y) + ridge
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale /= 2
        else:
            break
        converged = abs(current - value) < 1e-12
        theta, current = candidate, value
        if converged:
            break
    return float(theta[0]), float(theta[1]) if len(theta) > 1 else 0.0


def calibrated(p_female: np.ndarray | float, a: float, b: float = 0.0) -> np.ndarray:
    """The calibrated P(female)."""
    return sigmoid(a * logit(p_female) + b)


def confidence(p_female: np.ndarray | float) -> np.ndarray:
    """The probability of the stated gender: ``max(p, 1 - p)``."""
    p = np.asarray(p_female, dtype=np.float64)
    return np.maximum(p, 1 - p)


# -- the threshold --------------------------------------------------------------------------------------
def band_of(ages: Sequence[float] | np.ndarray, bands: Sequence[tuple[str, int, int]] = AGE_BANDS) -> np.ndarray:
    """Each age's band label (ages are whole years; an age in no band gets "")."""
    ages = np.asarray(ages, dtype=np.float64)
    labels = np.full(len(ages), "", dtype=object)
    for label, low, high in bands:
        labels[(ages >= low) & (ages <= high)] = label
    return labels


def wilson_lower(right: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """The lower end of the Wilson score interval of ``right / n`` (``z`` = 0: the share itself; n = 0 gives 0)."""
    right, n = np.asarray(right, dtype=np.float64), np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 1.0)
    share = right / safe
    centre = share + z * z / (2 * safe)
    spread = z * np.sqrt(share * (1 - share) / safe + z * z / (4 * safe * safe))
    return np.where(n > 0, (centre - spread) / (1 + z * z / safe), 0.0)


def choose_threshold(conf: np.ndarray, correct: np.ndarray, bands: np.ndarray, target: float = TARGET_ACCURACY,
                     band_order: Sequence[str] | None = None, z: float = 0.0) -> float | None:
    """The smallest ``t`` among 0.5 and the values of ``conf`` such that in every band the faces with
    ``conf >= t`` are at least ``target`` correct (a band with none of them meets it); None if no ``t`` does.
    With ``z`` > 0 the share must reach ``target`` at the lower end of its Wilson interval (:func:`wilson_lower`).

    The largest confidence always qualifies unless some band's faces at that confidence are wrong too often,
    so None is rare; a caller then shows every gender as uncertain.
    """
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    bands = np.asarray(bands, dtype=object)
    order = list(band_order) if band_order is not None else list(dict.fromkeys(bands.tolist()))
    candidates = np.unique(np.concatenate([[0.5], conf]))
    ok = np.ones(len(candidates), dtype=bool)
    for band in order:
        member = bands == band
        if not member.any():
            continue
        # faces of the band sorted by confidence: at each candidate, those at or above it are a suffix
        c = np.sort(conf[member])
        r = correct[member][np.argsort(conf[member], kind="stable")]
        right_from = np.concatenate([np.cumsum(r[::-1])[::-1], [0]])  # right answers among faces i.. end
        start = np.searchsorted(c, candidates, side="left")
        labelled = len(c) - start
        right = right_from[start]
        ok &= (labelled == 0) | (wilson_lower(right, labelled, z) >= target - 1e-9)
    if not ok.any():
        return None
    return float(candidates[np.argmax(ok)])


def strictest_threshold(conf: np.ndarray, correct: np.ndarray, bands: np.ndarray, target: float,
                        band_order: Sequence[str]) -> tuple[float | None, float]:
    """:func:`choose_threshold` at the largest Wilson ``z`` (from :data:`WILSON_Z_MAX` down in steps of
    :data:`WILSON_Z_STEP`, then 0) at which a threshold exists; ``(threshold, z)``."""
    steps = int(round(WILSON_Z_MAX / WILSON_Z_STEP))
    for z in [WILSON_Z_MAX - i * WILSON_Z_STEP for i in range(steps)] + [0.0]:
        threshold = choose_threshold(conf, correct, bands, target, band_order, z=z)
        if threshold is not None:
            return threshold, round(z, 3)
    return None, 0.0


def band_report(conf: np.ndarray, correct: np.ndarray, bands: np.ndarray, threshold: float | None,
                band_order: Sequence[str]) -> list[dict[str, Any]]:
    """Per band: faces, the share left uncertain, and the accuracy of the faces given a gender (None if none)."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    bands = np.asarray(bands, dtype=object)
    rows = []
    for band in list(band_order) + ["all"]:
        member = np.ones(len(conf), bool) if band == "all" else bands == band
        n = int(member.sum())
        if n == 0:
            continue
        labelled = member & (conf >= threshold) if threshold is not None else np.zeros_like(member)
        k = int(labelled.sum())
        rows.append({"group": band, "n": n, "labelled": k, "uncertain_share": float(1 - k / n),
                     "accuracy_labelled": float(correct[labelled].mean()) if k else None,
                     "accuracy_all": float(correct[member].mean())})
    return rows


# -- what serving reads from a card -----------------------------------------------------------------------
@dataclass(frozen=True)
class GenderCall:
    """What to show for one face: the gender (or "uncertain"), the side it leans to, and the confidence."""

    gender: str  # "female" | "male" | "uncertain"
    leans: str  # "female" | "male": the more likely one, also when uncertain
    confidence: float  # calibrated probability of ``leans``, 0.5..1
    calibrated: bool  # False: the model's own probability (the card has no calibration)

    @property
    def uncertain(self) -> bool:
        return self.gender == "uncertain"


@dataclass(frozen=True)
class GenderConfidence:
    """A card's calibration and threshold, applied to a model's P(female)."""

    a: float = 1.0
    b: float = 0.0
    threshold: float | None = None  # None: never "uncertain"
    is_calibrated: bool = True  # False: the card has no calibration; the model's probability is shown

    @classmethod
    def from_card(cls, card: dict | None) -> GenderConfidence:
        """The card's ``gender_confidence``; without one, the raw probability and no "uncertain"."""
        section = (card or {}).get("gender_confidence") or {}
        try:
            a, b = float(section["a"]), float(section.get("b", 0.0))
        except (KeyError, TypeError, ValueError):
            return cls(is_calibrated=False)
        threshold = section.get("threshold")
        if section.get("threshold_found") is False:  # no threshold met the target: nothing gets a gender
            threshold = 1.0 + 1e-9
        return cls(a=a, b=b, threshold=float(threshold) if threshold is not None else None)

    def p_female(self, raw_p_female: float) -> float:
        if not self.is_calibrated:
            return float(raw_p_female)
        return float(calibrated(raw_p_female, self.a, self.b))

    def call(self, raw_p_female: float) -> GenderCall:
        p = self.p_female(raw_p_female)
        leans = "female" if p >= 0.5 else "male"
        conf = p if p >= 0.5 else 1 - p
        uncertain = self.threshold is not None and conf < self.threshold
        return GenderCall("uncertain" if uncertain else leans, leans, conf, self.is_calibrated)


# -- measuring a model ------------------------------------------------------------------------------------
def fit_and_report(val_p: np.ndarray, val_female: np.ndarray, val_ages: np.ndarray, *,
                   test_p: np.ndarray | None = None, test_female: np.ndarray | None = None,
                   test_ages: np.ndarray | None = None, method: str = "temperature",
                   target: float = TARGET_ACCURACY) -> dict[str, Any]:
    """The card's ``gender_confidence`` section from val (fitted there) and, when given, test predictions."""
    order = [label for label, _, _ in AGE_BANDS]
    a, b = fit_calibration(val_p, val_female, method)

    def scored(p, female, ages):
        p_cal = calibrated(p, a, b)
        correct = (p_cal >= 0.5) == np.asarray(female, dtype=bool)
        return confidence(p_cal), correct, band_of(ages)

    val_conf, val_correct, val_bands = scored(val_p, val_female, val_ages)
    threshold, z = strictest_threshold(val_conf, val_correct, val_bands, target, order)
    section: dict[str, Any] = {
        "method": method, "a": a, "b": b, "temperature": (1 / a) if method == "temperature" and a else None,
        "threshold": threshold, "threshold_found": threshold is not None, "target_accuracy": target,
        "wilson_z": z,
        "band_rule": BAND_RULE.format(target=target), "fitted_on": "val",
        "nll": {"val_raw": _nll(1.0, 0.0, logit(val_p), np.asarray(val_female, float)),
                "val_calibrated": _nll(a, b, logit(val_p), np.asarray(val_female, float))},
        "val": {"n": int(len(val_p)), "by_age_band": band_report(val_conf, val_correct, val_bands, threshold, order)},
    }
    if test_p is not None:
        test_conf, test_correct, test_bands = scored(test_p, test_female, test_ages)
        section["test"] = {"n": int(len(test_p)),
                           "by_age_band": band_report(test_conf, test_correct, test_bands, threshold, order)}
    return section


def calibrate_model(path: str | os.PathLike, folder: str | os.PathLike | None = None, *,
                    method: str = "temperature", target: float = TARGET_ACCURACY) -> dict[str, Any]:
    """The ``gender_confidence`` section for the model at ``path``, as the app serves it (its TFLite export when
    the card records one made from this file), measured on the val and test splits of the data it was trained on."""
    from ..config import resolve_data_dir
    from ..data.utkface import dataset_fingerprint, load_utkface
    from .inference import predict_frame
    from .modelio import load_serving_model, require_same_data, require_train_fit

    path = Path(path)
    model, card = load_serving_model(path)
    require_train_fit(card, path, "the gender threshold")
    frame = load_utkface(folder)
    require_same_data(card, path, {"fingerprint": dataset_fingerprint(frame), "folder": str(resolve_data_dir(folder))})
    preds = {}
    for split in ("val", "test"):
        part = frame[frame["split"] == split]
        if part.empty:
            raise ValueError(f"the {split} split of {resolve_data_dir(folder)} is empty")
        rows, out, _ = predict_frame(model, card, part, progress=True)
        preds[split] = (out["p_female"], rows["gender"].to_numpy() == 1, rows["age"].to_numpy())
    section = fit_and_report(*preds["val"], test_p=preds["test"][0], test_female=preds["test"][1],
                             test_ages=preds["test"][2], method=method, target=target)
    served = getattr(model, "path", None)
    section["measured"] = {"served_file": Path(served).name if served else path.name,
                           "data_fingerprint": dataset_fingerprint(frame),
                           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return section


def write_to_card(path: str | os.PathLike, section: dict[str, Any]) -> dict[str, Any]:
    """Store ``section`` as ``gender_confidence`` in the card beside the model at ``path``; the new card."""
    from .modelio import card_path, read_card, write_json_atomic

    card = {**read_card(path), "gender_confidence": section}
    write_json_atomic(card_path(path), card)
    return card


def format_section(section: dict[str, Any]) -> str:
    """The section as a few readable lines (what ``agegender calibrate-gender`` prints)."""
    t = section["threshold"]
    scale = (f"temperature {section['temperature']:.3f}" if section["method"] == "temperature"
             else f"a {section['a']:.3f}, b {section['b']:+.3f}")
    lines = [f"calibration ({section['method']}, fitted on val): {scale}; val NLL {section['nll']['val_raw']:.4f} -> "
             f"{section['nll']['val_calibrated']:.4f}",
             f"threshold: {'none meets the target' if t is None else f'{100 * t:.2f} %'} (every age band >= "
             f"{100 * section['target_accuracy']:.0f} % right among the faces given a gender, on val)",
             f"{'split':<5} {'band':<6} {'faces':>6} {'uncertain':>10} {'acc. labelled':>14} {'acc. all':>9}"]
    for split in ("val", "test"):
        for row in section.get(split, {}).get("by_age_band", []):
            acc = "-" if row["accuracy_labelled"] is None else f"{100 * row['accuracy_labelled']:.1f} %"
            lines.append(f"{split:<5} {row['group']:<6} {row['n']:>6} {100 * row['uncertain_share']:>8.1f} % "
                         f"{acc:>14} {100 * row['accuracy_all']:>7.1f} %")
    return "\n".join(lines)
