"""Metrics of a model on a labelled set: overall, baseline, by group, confusion, calibration.

Predicting (batches, test-time views, the age ranges a card asks for) is :mod:`agegender.serving.inference`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from ..config import AGE_BANDS, AGE_DECADES, GENDERS, MB, RACES
from ..serving.inference import RANGE_QUANTILES, RANGE_TAIL, age_ranges, card_range_quantiles

#: The quantiles a calibration chooses from, per tail (a grid: the ranges are whole years, so coverage moves in steps).
LOW_QUANTILES = tuple(round(0.005 * i, 3) for i in range(1, 61))       # 0.005 ... 0.300
HIGH_QUANTILES = tuple(round(1 - q, 3) for q in reversed(LOW_QUANTILES))  # 0.700 ... 0.995

def age_band(ages: np.ndarray | pd.Series, bands: tuple[tuple[str, int, int], ...] = AGE_BANDS) -> np.ndarray:
    labels = np.empty(len(ages), dtype=object)
    for label, low, high in bands:
        labels[(np.asarray(ages) >= low) & (np.asarray(ages) <= high)] = label
    return labels


def standard_errors(abs_err: np.ndarray, gender_correct: np.ndarray) -> dict[str, float | None]:
    """Sampling standard errors of an MAE and an accuracy over ``n`` independent faces (None if undefined).

    They say how far the figure could move on another sample of the same size: a difference of
    about one standard error between two models (or a model and a goal) is within that noise.
    """
    n = len(abs_err)
    accuracy = float(np.mean(gender_correct)) if n else 0.0
    return {"age_mae_se": float(np.std(abs_err, ddof=1) / np.sqrt(n)) if n > 1 else None,
            "gender_accuracy_se": float(np.sqrt(accuracy * (1 - accuracy) / n)) if n else None}


def _group_table(frame: pd.DataFrame, by: str, order: list) -> list[dict[str, Any]]:
    rows = []
    for value in order:
        part = frame[frame[by] == value]
        if len(part) == 0:
            continue
        rows.append({"group": str(value), "n": int(len(part)), "age_mae": float(part["abs_err"].mean()),
                     "age_bias": float(part["err"].mean()), "gender_accuracy": float(part["gender_correct"].mean()),
                     **standard_errors(part["abs_err"].to_numpy(), part["gender_correct"].to_numpy())})
    return rows


def calibration(p_female: np.ndarray, gender: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability table of P(female) and the expected calibration error."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p_female, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        mean_p, observed = float(p_female[mask].mean()), float(gender[mask].mean())
        ece += mask.mean() * abs(mean_p - observed)
        table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int(mask.sum()),
                      "mean_predicted": mean_p, "observed_female": observed})
    return {"ece": float(ece), "bins": table}


def range_coverage(age_true: np.ndarray, age_dist: np.ndarray,
                   quantiles: tuple[float, float] = RANGE_QUANTILES) -> dict[str, Any]:
    """How often the reported age range holds the true age (it should, for 80 % of faces), and its width."""
    low, high = age_ranges(age_dist, quantiles)
    age_true = np.asarray(age_true, dtype=float)
    inside = (age_true >= low) & (age_true <= high)
    return {"quantiles": [float(q) for q in quantiles], "coverage": float(inside.mean()),
            "mean_width_years": float((high - low).mean()),
            "below": float((age_true < low).mean()), "above": float((age_true > high).mean())}


def calibrate_range(age_true: np.ndarray, age_dist: np.ndarray, tail: float = RANGE_TAIL) -> tuple[float, float]:
    """The quantiles whose ranges leave a share closest to ``tail`` of the true ages below and above them.

    Each end is chosen on its own from ``LOW_QUANTILES`` / ``HIGH_QUANTILES``; of equally close quantiles the one
    giving the wider range. Calibrate on faces the model was not fitted on (val): a mixture of two distributions
    can be wider than its errors, so the nominal 10 % / 90 % quantiles hold more than 80 % of true ages.
    """
    if len(age_true) == 0:
        raise ValueError("calibrating the age range needs at least one face")
    # the low end decides only the share below, the high end only the share above; pairs widest first, and min()
    # keeps the first of equal distances: the wider range
    pairs = [range_coverage(age_true, age_dist, quantiles) for quantiles in zip(LOW_QUANTILES, reversed(HIGH_QUANTILES))]
    low = min(pairs, key=lambda r: abs(r["below"] - tail))["quantiles"][0]
    high = min(pairs, key=lambda r: abs(r["above"] - tail))["quantiles"][1]
    return low, high


def evaluate_predictions(frame: pd.DataFrame, age_pred: np.ndarray, p_female: np.ndarray,
                         train_ages: np.ndarray | None = None, train_genders: np.ndarray | None = None,
                         age_dist: np.ndarray | None = None,
                         range_quantiles: tuple[float, float] = RANGE_QUANTILES) -> dict[str, Any]:
    """All metrics for predictions on the rows of ``frame`` (columns age, gender, race).

    The trivial baseline predicts the median age and the majority gender of the
    training rows when given, else of ``frame`` itself. With ``age_dist`` (distribution
    models) also the coverage of the age range between the ``range_quantiles`` of each distribution.
    """
    age_true = frame["age"].to_numpy(dtype=float)
    gender_true = frame["gender"].to_numpy(dtype=int)
    gender_pred = (np.asarray(p_female) >= 0.5).astype(int)
    error = np.asarray(age_pred, dtype=float) - age_true
    table = pd.DataFrame({
        "age": age_true, "err": error, "abs_err": np.abs(error),
        "gender": gender_true, "gender_correct": gender_pred == gender_true,
        "band": age_band(age_true), "decade": age_band(age_true, AGE_DECADES), "race": frame["race"].map(lambda r: RACES.get(r, "unknown") if pd.notna(r) else "unknown").to_numpy(),
        "gender_name": [GENDERS[g] for g in gender_true],
    })
    base_ages = age_true if train_ages is None else np.asarray(train_ages)
    base_genders = gender_true if train_genders is None else np.asarray(train_genders)
    median_age = float(np.median(base_ages))
    majority = int(np.mean(base_genders) >= 0.5)
    confusion = [[int(((gender_true == t) & (gender_pred == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    return {
        "n": int(len(frame)),
        "age_mae": float(table["abs_err"].mean()),
        "age_rmse": float(np.sqrt(np.mean(table["abs_err"] ** 2))),
        "age_bias": float(error.mean()),  # mean predicted minus true age
        "gender_accuracy": float(table["gender_correct"].mean()),
        **standard_errors(table["abs_err"].to_numpy(), table["gender_correct"].to_numpy()),
        "baseline": {"age": median_age, "age_mae": float(np.abs(age_true - median_age).mean()),
                     "gender": GENDERS[majority], "gender_accuracy": float((gender_true == majority).mean())},
        "by_age_band": _group_table(table, "band", [b[0] for b in AGE_BANDS]),
        "by_decade": _group_table(table, "decade", [d[0] for d in AGE_DECADES]),
        "by_race": _group_table(table, "race", list(RACES.values()) + ["unknown"]),
        "by_gender": _group_table(table, "gender_name", list(GENDERS.values())),
        "confusion_matrix": {"labels": ["male", "female"], "rows_true_cols_predicted": confusion},
        "gender_calibration": calibration(np.asarray(p_female, dtype=float), gender_true),
        **({"age_range": range_coverage(age_true, age_dist, range_quantiles)} if age_dist is not None else {}),
    }


def format_report(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text report of :func:`evaluate_predictions` output."""
    lines = [title] if title else []
    base = metrics["baseline"]
    lines.append(f"n={metrics['n']}  age MAE {metrics['age_mae']:.2f} y  gender accuracy "
                 f"{100 * metrics['gender_accuracy']:.1f} %")
    if metrics.get("age_mae_se") is not None:  # absent from older cards, None for a single face
        lines.append(f"standard errors (sampling noise of n faces): age MAE +/- {metrics['age_mae_se']:.2f} y, "
                     f"gender accuracy +/- {100 * metrics['gender_accuracy_se']:.1f} points")
    lines.append(f"baseline (median age {base['age']:.0f}, always {base['gender']}): age MAE "
                 f"{base['age_mae']:.2f} y, gender accuracy {100 * base['gender_accuracy']:.1f} %")
    for key, label in (("by_age_band", "age band"), ("by_race", "race"), ("by_gender", "gender")):
        lines.append(f"{label:>10}  {'n':>6}  {'age MAE':>8}  {'bias':>6}  {'gender acc':>10}")
        for row in metrics[key]:
            lines.append(f"{row['group']:>10}  {row['n']:>6}  {row['age_mae']:>8.2f}  {row['age_bias']:>+6.2f}  "
                         f"{100 * row['gender_accuracy']:>9.1f}%")
    cm = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    lines.append(f"confusion (true rows male/female, predicted cols male/female): {cm}")
    lines.append(f"gender calibration ECE: {metrics['gender_calibration']['ece']:.3f}")
    if "age_range" in metrics:
        r = metrics["age_range"]
        lines.append(f"age range (quantiles {r['quantiles'][0]:g}-{r['quantiles'][1]:g}, meant to hold "
                     f"{100 * (1 - 2 * RANGE_TAIL):.0f} %): holds the true age for {100 * r['coverage']:.1f} % of faces, "
                     f"{r['mean_width_years']:.1f} years wide on average")
    return "\n".join(lines)


def evaluate_folder(folder: str | os.PathLike | None, model_path: str | os.PathLike | None = None, *,
                    use_all: bool = False, batch_size: int = 256, with_predictions: bool = False):
    """Evaluate a saved model on the test split of a UTKFace folder (or all of it).

    With ``with_predictions`` also returns the evaluated rows and the predictions, so
    callers that plot them (notebook 04) don't decode and predict the split again.
    """
    from ..config import default_model_path, resolve_data_dir
    from ..data.utkface import SkipReport, dataset_fingerprint, load_utkface
    from ..serving.inference import predict_frame
    from ..serving.modelio import load_serving_model

    model_path = model_path or default_model_path()
    model, card = load_serving_model(model_path, prefer_tflite=False)  # x.tflite evaluates the export
    report = SkipReport()
    frame = load_utkface(folder, report=report)
    train = frame[frame["split"] == "train"]
    subset = frame if use_all else frame[frame["split"] == "test"]
    if subset.empty:
        raise ValueError("no test-split images in this folder; use --all to evaluate on all of it")
    rows, preds, errors = predict_frame(model, card, subset, batch_size=batch_size)
    metrics = evaluate_predictions(rows, preds["age"], preds["p_female"],
                                   train["age"].to_numpy() if not use_all and len(train) else None,
                                   train["gender"].to_numpy() if not use_all and len(train) else None,
                                   age_dist=preds.get("age_dist"), range_quantiles=card_range_quantiles(card))
    metrics.update({"model": str(model_path), "folder": str(resolve_data_dir(folder)),
                    "subset": "all" if use_all else "test", "data_fingerprint": dataset_fingerprint(frame),
                    "skipped": report.to_dict(), "undecodable": len(errors)})
    return (metrics, rows, preds) if with_predictions else metrics


def _epochs_label(training: dict[str, Any]) -> str:
    """Epochs of a run, with those of the stage it started from: "8+1"."""
    own = training.get("epochs_completed")
    previous = training.get("previous_stage")
    return f"{previous['epochs_completed']}+{own}" if previous else str(own)


def compare_models(model_paths: list[str | os.PathLike], folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per model, all evaluated on the same test split: overall, per age band, cost.

    Columns starting with ``SE`` are the sampling standard errors of the figures they name.
    """
    from ..serving.modelio import read_card

    rows = []
    for path in model_paths:
        metrics, card = evaluate_folder(folder, path), read_card(path)
        training = card.get("training", {})
        name = card.get("name", os.path.basename(str(path)))
        if str(path).endswith(".tflite"):
            quantization = card.get("tflite", {}).get("quantization")  # absent: converted by other means
            name += f" (TFLite {quantization} export)" if quantization else " (TFLite export)"
        row = {"model": name, "parameters": card.get("parameters"),
               "input": f"{card['input']['image_size']}px {card['input']['color_mode']}",
               "test age MAE": round(metrics["age_mae"], 2),
               "test gender acc %": round(100 * metrics["gender_accuracy"], 1)}
        row.update({f"MAE {b['group']}": round(b["age_mae"], 2) for b in metrics["by_age_band"]})
        age_se = {"SE test age MAE": metrics["age_mae_se"],
                  **{f"SE MAE {b['group']}": b["age_mae_se"] for b in metrics["by_age_band"]}}
        row.update({column: round(se, 2) for column, se in age_se.items() if se is not None})  # None: one face
        if metrics["gender_accuracy_se"] is not None:
            row["SE test gender acc %"] = round(100 * metrics["gender_accuracy_se"], 1)
        row.update({"acc female %": next((round(100 * g["gender_accuracy"], 1) for g in metrics["by_gender"]
                                          if g["group"] == "female"), None),
                    "acc male %": next((round(100 * g["gender_accuracy"], 1) for g in metrics["by_gender"]
                                        if g["group"] == "male"), None),
                    "epochs": _epochs_label(training),
                    "train minutes": round(training.get("wall_seconds_all_stages", training.get("wall_seconds", 0)) / 60, 1),
                    "file MB": round(os.path.getsize(path) / MB, 1)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
