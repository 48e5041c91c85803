"""The serving-side detail cap of research/domain_robustness.md: each model input (128 px) shrunk to N px (area) and
enlarged back (bilinear) before the model, on UTKFace val and on FG-NET's largest faces (whole-photo path).

    UTKFACE_DIR=... .venv/bin/python research/probes/detail_cap.py ../shared/datasets/fgnet MODEL [MODEL ...] \
        [--caps none,96,80,64] [--out runs/detail_cap.json] [--figure docs/figures/domain_gap.png]

``--figure`` plots every (model, cap) point as val bias against FG-NET bias: if a change closed the gap between
the two domains, its point would leave the diagonal band; if it only moved all ages, it slides along it.
``--replot POINTS.json`` draws the figure from a run's ``--out`` without predicting again, ``--leave-out NAME``
without a model's points (the seed CNN's FG-NET bias, +10 y, would squash the rest).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from agegender.data import load_utkface
from agegender.data.preprocess import load_split_arrays
from agegender.serving.modelio import input_resize
from agegender.serving.predict import Predictor
from _photos import model_inputs


def capped(images: np.ndarray, side: int | None) -> np.ndarray:
    if side is None:
        return images
    size = images.shape[1]
    out = np.stack([cv2.resize(cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA), (size, size),
                               interpolation=cv2.INTER_LINEAR) for im in images])
    return out.reshape(images.shape)  # OpenCV drops a grayscale image's channel axis


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fgnet", nargs="?")
    parser.add_argument("models", nargs="*")
    parser.add_argument("--caps", default="none,96,80,64")
    parser.add_argument("--labels", help="comma-separated names for the models in the figure (default: card names)")
    parser.add_argument("--out", help="write the points as JSON")
    parser.add_argument("--figure", help="plot val bias against FG-NET bias")
    parser.add_argument("--replot", help="with --figure: plot the points of an earlier --out file")
    parser.add_argument("--leave-out", action="append", default=[], help="a model label to leave out of the figure")
    args = parser.parse_args()
    if args.replot:
        points = json.loads(Path(args.replot).read_text())
        plot_gap([p for p in points if p["model"] not in args.leave_out], args.figure)
        return
    if not args.fgnet or not args.models:
        parser.error("give the FG-NET folder and at least one model (or --replot)")
    caps = [None if c == "none" else int(c) for c in args.caps.split(",")]
    labels = args.labels.split(",") if args.labels else [None] * len(args.models)
    points = []
    frame = load_utkface()
    val = frame[frame["split"] == "val"]
    for path, label in zip(args.models, labels):
        predictor = Predictor.load(path)
        crops, ages = model_inputs(predictor, args.fgnet)
        card = predictor.card
        val_images, val_rows, _ = load_split_arrays(val, card["input"]["image_size"], card["input"]["color_mode"],
                                                    resize=input_resize(card), progress=False)
        for side in caps if not card.get("detail_cap") else [None]:
            v = np.array([p.age for p in predictor.predict_crops(capped(val_images, side))]) - val_rows["age"].to_numpy()
            f = np.array([p.age for p in predictor.predict_crops(capped(crops, side))]) - ages
            print(f"{card['name']:>18} cap {str(side):>4}: val MAE {np.abs(v).mean():.3f} bias {v.mean():+.2f} | "
                  f"FG-NET ({len(ages)} faces) MAE {np.abs(f).mean():.3f} bias {f.mean():+.2f}", flush=True)
            in_graph = card.get("detail_cap")  # a served cap: {"side": 80, ...}
            points.append({"model": label or card["name"], "path": path,
                           "cap": side or (in_graph["side"] if isinstance(in_graph, dict) else in_graph),
                           "val_mae": float(np.abs(v).mean()), "val_bias": float(v.mean()),
                           "fgnet_mae": float(np.abs(f).mean()), "fgnet_bias": float(f.mean())})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(points, indent=1))
    if args.figure:
        plot_gap([p for p in points if p["model"] not in args.leave_out], args.figure)


def plot_gap(points: list[dict], figure: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = np.array([p["val_bias"] for p in points])
    fg = np.array([p["fgnet_bias"] for p in points])
    gap = float(np.mean(fg - val))
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    models = list(dict.fromkeys(p["model"] for p in points))
    for i, model in enumerate(models):
        mine = [p for p in points if p["model"] == model]
        ax.plot([p["val_bias"] for p in mine], [p["fgnet_bias"] for p in mine], "o-", color=f"C{i}", label=model)
        for p in mine:
            if p["cap"]:
                ax.annotate(f"{p['cap']} px", (p["val_bias"], p["fgnet_bias"]), textcoords="offset points",
                            xytext=(4, 3), fontsize=7, color=f"C{i}")
    lo, hi = min(val.min(), -1.0) - 0.3, max(val.max(), 0.5) + 0.3
    xs = np.array([lo, hi])
    ax.plot(xs, xs + gap, "k--", lw=1, label=f"FG-NET bias = val bias + {gap:.1f} y")
    ax.axhspan(-1.5, 1.5, color="tab:green", alpha=0.12, label="goal on FG-NET (bias within +-1.5 y)")
    ax.set_xlabel("UTKFace val: mean bias (years)")
    ax.set_ylabel("FG-NET: mean bias (years)")
    ax.set_title("Every change moves both domains alike: the gap stays")
    ax.legend(fontsize=7, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=130)


if __name__ == "__main__":
    main()
