"""Figures of the workflow (matplotlib/seaborn). Each function returns its Figure; ``save`` writes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend().lower():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..config import GENDERS, RACES

sns.set_theme(style="whitegrid", context="notebook")


def save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def label_distributions(frame: pd.DataFrame) -> plt.Figure:
    """Age histogram by gender, gender counts and race counts."""
    named = frame.assign(gender_name=frame["gender"].map(GENDERS),
                         race_name=frame["race"].map(lambda r: RACES.get(r, "unknown") if pd.notna(r) else "unknown"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [2, 1, 1.3]})
    sns.histplot(named, x="age", hue="gender_name", bins=range(0, 118, 2), multiple="stack", ax=axes[0])
    axes[0].set_title(f"Age ({len(frame):,} images)")
    sns.countplot(named, x="gender_name", order=list(GENDERS.values()), ax=axes[1])
    axes[1].set_title("Gender")
    sns.countplot(named, x="race_name", order=list(RACES.values()) + ["unknown"], ax=axes[2])
    axes[2].set_title("Race")
    axes[2].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, rows: pd.DataFrame, predictions: dict[str, np.ndarray] | None = None,
                columns: int = 6) -> plt.Figure:
    """Faces with their true labels (and predictions when given)."""
    count = min(len(images), columns * 3)
    grid_rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(grid_rows, columns, figsize=(2.2 * columns, 2.5 * grid_rows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= count:
            continue
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        title = f"{rows['age'].iloc[i]} {GENDERS[int(rows['gender'].iloc[i])]}"
        if predictions is not None:
            sex = "female" if predictions["p_female"][i] >= 0.5 else "male"
            title += f"\npred {predictions['age'][i]:.0f} {sex}"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame | Sequence[dict[str, Any]], *, val_in_training: bool = False
                    ) -> plt.Figure:
    """Gender accuracy, gender loss and age MAE, train vs validation, per epoch.

    ``val_in_training``: the run was a refit on train + val, so its val curve is not held out and is labelled so.
    """
    return runs_training_curves({"": history}, val_in_training=val_in_training)


def runs_training_curves(histories: dict[str, pd.DataFrame | Sequence[dict[str, Any]]], *,
                         val_in_training: bool = False) -> plt.Figure:
    """:func:`training_curves` of several runs on the same axes, each labelled with its name (e.g. an ensemble's
    members)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in histories.items():
        history = pd.DataFrame(history)
        epochs = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
        prefix = f"{name}: " if name else ""
        for ax, key in zip(axes, ("gender_out_accuracy", "gender_out_loss", "age_out_mae")):
            ax.plot(epochs, history[key], marker="o", label=f"{prefix}train")
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], marker="o",
                        label=prefix + ("validation (in training: a refit)" if val_in_training else "validation"))
    for ax, title in zip(axes, ("Gender accuracy", "Gender loss", "Age MAE (years)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    return fig


def card_training_curves(card: dict[str, Any]) -> plt.Figure:
    """:func:`training_curves` of a model card's history; a refit's val curve is labelled as not held out.

    An ensemble's card holds its members' histories: each is drawn, named after its member."""
    val = card.get("metrics", {}).get("val", {})
    if "members" in card:
        return runs_training_curves({m["name"]: m["history"] for m in card["members"]})
    return training_curves(card["training"]["history"], val_in_training=bool(val.get("seen_in_training")))


def predicted_vs_true(true_age: np.ndarray, predicted_age: np.ndarray) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(true_age, predicted_age, s=6, alpha=0.35)
    ax.plot([0, 116], [0, 116], color="black", linewidth=1)
    mae = float(np.mean(np.abs(np.asarray(predicted_age) - np.asarray(true_age))))
    ax.set(xlabel="true age", ylabel="predicted age", title=f"Predicted vs true age (MAE {mae:.2f})",
           xlim=(0, 117), ylim=(0, 117))
    return fig


def confusion_matrix(metrics: dict[str, Any]) -> plt.Figure:
    cm = np.array(metrics["confusion_matrix"]["rows_true_cols_predicted"])
    labels = metrics["confusion_matrix"]["labels"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", xticklabels=labels, yticklabels=labels, ax=ax, cbar=False)
    ax.set(xlabel="predicted", ylabel="true", title=f"Gender (accuracy {100 * metrics['gender_accuracy']:.1f} %)")
    return fig


def errors_by_group(metrics: dict[str, Any]) -> plt.Figure:
    """Age MAE and gender accuracy by age band and by race, with n on each bar."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for col, key, title in ((0, "by_age_band", "age band"), (1, "by_race", "race")):
        table = pd.DataFrame(metrics[key])
        for row, (metric, label, scale) in enumerate((("age_mae", "age MAE (years)", 1), ("gender_accuracy", "gender accuracy (%)", 100))):
            ax = axes[row, col]
            bars = ax.bar(table["group"], table[metric] * scale, color=sns.color_palette()[row])
            ax.bar_label(bars, labels=[f"n={n}" for n in table["n"]], fontsize=8)
            ax.set(title=f"{label} by {title}", ylabel=label)
            if metric == "gender_accuracy":
                ax.set_ylim(max(0, float(table[metric].min() * 100) - 10), 100)
    fig.tight_layout()
    return fig


def calibration_curve(metrics: dict[str, Any]) -> plt.Figure:
    table = pd.DataFrame(metrics["gender_calibration"]["bins"])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="black", linewidth=1)
    ax.plot(table["mean_predicted"], table["observed_female"], marker="o")
    ax.set(xlabel="predicted P(female)", ylabel="observed share female",
           title=f"Gender calibration (ECE {metrics['gender_calibration']['ece']:.3f})")
    return fig
