"""Load time of a saved model and latency of one aligned face (median of repeated calls).

    python benchmarks/inference_speed.py [--model models/agenet.keras] [--repeats 50]

Load time is measured after TensorFlow is imported (importing TensorFlow itself takes a few seconds
once per process and is the same for every model). Latency covers the whole per-face path of
``agegender predict --aligned``: model-input conversion and one compiled model call (with the test-time
views the model card asks for, mirror and zooms, in the same call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402,F401  (import cost excluded from the load time)
import numpy as np  # noqa: E402

from agegender.config import SAMPLE_DIR, default_model_path  # noqa: E402
from agegender.images import open_image  # noqa: E402
from agegender.litert import TFLiteModel  # noqa: E402
from agegender.predict import Predictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    start = time.perf_counter()
    predictor = Predictor.load(args.model)
    load_seconds = time.perf_counter() - start
    face = open_image(sorted(SAMPLE_DIR.glob("*.jpg"))[0])
    start = time.perf_counter()
    predictor.predict_crops(np.stack([predictor.prepare(face)]))
    first_call = time.perf_counter() - start
    latencies = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predictor.predict_crops(np.stack([predictor.prepare(face)]))
        latencies.append(time.perf_counter() - start)
    # a .keras model is served by its TFLite export when the export matches it
    served = predictor.model.path if isinstance(predictor.model, TFLiteModel) else args.model
    print(f"model {args.model}, served by {os.path.basename(str(served))} ({os.path.getsize(served) / 2**20:.1f} MB), "
          f"{os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"load: {load_seconds:.2f} s; first call (graph tracing): {first_call:.2f} s")
    print(f"one aligned face: median {1000 * statistics.median(latencies):.1f} ms, "
          f"p90 {1000 * sorted(latencies)[int(0.9 * len(latencies))]:.1f} ms over {args.repeats} calls "
          f"(tta_flip={predictor.views['tta_flip']}, tta_zoom={list(predictor.views['tta_zoom'])})")


if __name__ == "__main__":
    main()
