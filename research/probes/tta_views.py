"""Which test-time views to average: none, the mirror, centre zooms, and their mirrors.

Prints gender accuracy, age MAE and MAE per age band on val and test for each set of views, averaged
as ``predict_arrays`` averages them. Choose on val; test is shown to confirm. Each view costs one more
pass of the network per face (``benchmarks/inference_speed.py`` measures the latency of the card's views).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/tta_views.py [--model models/agenet.keras]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits (shared with benchmarks/)

import numpy as np  # noqa: E402

from agegender.config import AGE_BANDS, default_model_path  # noqa: E402
from agegender.data import load_utkface  # noqa: E402
from agegender.evaluation.metrics import evaluate_predictions  # noqa: E402
from agegender.serving.inference import centre_zoom, predict_arrays  # noqa: E402
from agegender.serving.modelio import load_serving_model  # noqa: E402
from _splits import split_arrays  # noqa: E402

ZOOMS = (1.0, 0.92, 1.08)
VIEW_SETS: dict[str, tuple[tuple[float, ...], bool]] = {  # name -> (zooms, with mirrors)
    "none": ((1.0,), False),
    "flip": ((1.0,), True),
    "zoom 0.92": ((1.0, 0.92), False),
    "flip + zoom 0.92": ((1.0, 0.92), True),
    "flip + zoom 1.08": ((1.0, 1.08), True),
    "flip + zoom 0.92, 1.08": ((1.0, 0.92, 1.08), True),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    model, card = load_serving_model(args.model, prefer_tflite=False)
    frame = load_utkface()
    print(f"model {args.model}; age read-out of the model, averaged over the views")
    print(f"{'split':<5} {'views':<24} {'n':>2} {'gender %':>8} {'age MAE':>7} "
          + " ".join(f"{label:>6}" for label, _, _ in AGE_BANDS))
    for split in ("val", "test"):
        images, rows = split_arrays(card, frame, split)
        single = {}
        for zoom in ZOOMS:
            view = centre_zoom(np.asarray(images, dtype="float32"), zoom)
            for mirrored in (False, True):
                single[zoom, mirrored] = predict_arrays(model, np.ascontiguousarray(view[:, :, ::-1]) if mirrored else view)
        for name, (zooms, flip) in VIEW_SETS.items():
            keys = [(z, m) for z in zooms for m in ((False, True) if flip else (False,))]
            m = evaluate_predictions(rows, np.mean([single[k]["age"] for k in keys], axis=0),
                                     np.mean([single[k]["p_female"] for k in keys], axis=0))
            print(f"{split:<5} {name:<24} {len(keys):>2} {100 * m['gender_accuracy']:8.2f} {m['age_mae']:7.2f} "
                  + " ".join(f"{band['age_mae']:6.2f}" for band in m["by_age_band"]))


if __name__ == "__main__":
    main()
