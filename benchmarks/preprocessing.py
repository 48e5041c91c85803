"""Preprocessing: the popular notebook's loop vs the project's pipeline, side by side in one run.

Each variant runs in its own subprocess so that its wall time and peak memory (max RSS) are its own.
The popular loop is the one of the most-copied UTKFace notebook: ``load_img`` grayscale, PIL resize to
128x128, a Python list stacked into an array, divided by 255 (float64).

    UTKFACE_DIR=/path/to/UTKFace python benchmarks/preprocessing.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

POPULAR = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from keras.utils import load_img
from agegender.data import load_utkface
paths = load_utkface().path.tolist()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
features = []
for image in paths:
    img = load_img(image, color_mode="grayscale")
    img = img.resize((128, 128), Image.LANCZOS)
    features.append(np.array(img))
features = np.array(features).reshape(len(features), 128, 128, 1)
features = features / 255.0
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "n": len(paths), "dtype": str(features.dtype),
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_imports_mb": base / 1024}))
"""

OURS = r"""
import json, resource, sys, time
from agegender.data import load_utkface
from agegender.data.preprocess import load_images
paths = load_utkface().path.tolist()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = load_images(paths, 128, "grayscale", progress=False)
print(json.dumps({"seconds": result.seconds, "n": len(paths), "dtype": str(result.images.dtype),
                  "from_cache": result.from_cache,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_imports_mb": base / 1024}))
"""


def run(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "AGEGENDER_CACHE": cache, "TF_CPP_MIN_LOG_LEVEL": "3"}
        popular = run(POPULAR, env)
        cold = run(OURS, env)
        cached = run(OURS, env)
    assert not cold["from_cache"] and cached["from_cache"]
    print(f"{popular['n']:,} images -> 128x128 grayscale, {os.cpu_count()} CPUs")
    print(f"{'variant':<34} {'seconds':>8} {'speed-up':>9} {'peak RSS MB':>12} {'RSS after imports':>18} dtype")
    for name, r in (("popular loop (load_img, float64)", popular), ("agegender cold (threads, uint8)", cold),
                    ("agegender cached (.npy)", cached)):
        print(f"{name:<34} {r['seconds']:>8.2f} {popular['seconds'] / r['seconds']:>8.1f}x {r['max_rss_mb']:>12.0f} "
              f"{r['rss_after_imports_mb']:>18.0f} {r['dtype']}")
    print(f"peak memory ratio (agegender cold / popular): {cold['max_rss_mb'] / popular['max_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
