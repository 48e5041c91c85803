"""How much averaging several trained models would buy: each model alone and the mean of their outputs.

A probe of the noise ceiling, not a product: an ensemble of N full runs costs N training budgets and N times
the inference, so it cannot be the default under the 90-minute goal. It answers whether the goals the default
misses are a matter of run-to-run variance (averaging closes them) or of the recipe (it does not).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/ensemble_probe.py models/agenet.keras models/agenet_v9.keras

Each model is served as its card says (input size, read-out, test-time views); the ensemble averages the
predicted ages and the P(female) of the models. ``--weight-average`` also serves one model whose weights are the
mean of the models' weights (a "model soup"; one model's inference cost), served as the first model's card says.
It only makes sense for models of one architecture that stayed in one basin, e.g. second stages started from
the same model:

    python research/probes/ensemble_probe.py --weight-average models/agenet.keras runs/agenet_v13_ft/agenet_v13_ft.keras
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits (shared with benchmarks/)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _splits import predict_model_splits, predict_splits  # noqa: E402

from agegender.config import AGE_BANDS  # noqa: E402
from agegender.evaluation.metrics import evaluate_predictions  # noqa: E402
from agegender.serving.modelio import load_model  # noqa: E402

if TYPE_CHECKING:
    import keras


def summary(age: np.ndarray, gender: np.ndarray, pred_age: np.ndarray, p_female: np.ndarray) -> str:
    """Overall MAE, MAE per age band and gender accuracy (as :func:`evaluate_predictions` computes them), on one line."""
    metrics = evaluate_predictions(pd.DataFrame({"age": age, "gender": gender, "race": np.nan}), pred_age, p_female)
    per_band = " / ".join(f"{band['age_mae']:.2f}" for band in metrics["by_age_band"])
    return f"MAE {metrics['age_mae']:.2f}  bands {per_band}  gender {100 * metrics['gender_accuracy']:.2f} %"


def weight_average(paths: list[str]) -> tuple["keras.Model", dict]:
    """The first model with every weight (batch-norm statistics included) replaced by the mean over the models,
    and its card."""
    loaded = [load_model(path) for path in paths]
    weights = [model.get_weights() for model, _ in loaded]
    for path, own in zip(paths[1:], weights[1:]):
        if [w.shape for w in own] != [w.shape for w in weights[0]]:
            raise SystemExit(f"{path}: its weights do not match {paths[0]}'s architecture; cannot average them")
    model, card = loaded[0]
    model.set_weights([np.mean(same, axis=0) for same in zip(*weights)])
    return model, card


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="model files (.keras with their .json card beside them)")
    parser.add_argument("--weight-average", action="store_true",
                        help="also the model whose weights are the mean of the models' weights")
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give at least two models to average")
    preds = [predict_splits(path) for path in args.models]
    soup = predict_model_splits(*weight_average(args.models)) if args.weight_average else None
    print(f"bands: {' / '.join(label for label, _, _ in AGE_BANDS)}")
    for split in ("val", "test"):
        truth = preds[0][split]
        for path, pred in zip(args.models, preds):
            if not np.array_equal(pred[split]["age"], truth["age"]):
                raise SystemExit(f"{path}: the {split} split differs from {args.models[0]}'s")
            print(f"{split:4} {path:40} {summary(truth['age'], truth['gender'], pred[split]['pred_age'], pred[split]['p_female'])}")
        mean_age = np.mean([p[split]["pred_age"] for p in preds], axis=0)
        mean_female = np.mean([p[split]["p_female"] for p in preds], axis=0)
        print(f"{split:4} {'mean of the ' + str(len(preds)) + ' models':40} "
              f"{summary(truth['age'], truth['gender'], mean_age, mean_female)}")
        if soup:
            print(f"{split:4} {'mean of their weights':40} "
                  f"{summary(truth['age'], truth['gender'], soup[split]['pred_age'], soup[split]['p_female'])}")


if __name__ == "__main__":
    main()
