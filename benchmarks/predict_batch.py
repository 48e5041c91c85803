"""Photos per second and peak memory of `agegender predict-batch` (Ray Data, 1 and 2 workers) beside one process.

    UTKFACE_DIR=... python benchmarks/predict_batch.py [--sizes 2000,all] [--workers 1,2] [--limit N] [--out FILE]

On the first N (sorted) UTKFace crops, all with ``--aligned``, for each N of ``--sizes`` (``all``: the whole
folder; ``--limit`` caps every size, for a quick check):

- ``predict_crops``: one Python process decoding the crops and calling ``Predictor.predict_crops`` in batches of
  64, keeping nothing (the floor: no Ray, no output);
- ``agegender predict --aligned --json``: the command as people run it (it holds every crop and result);
- ``predict-batch, N workers``: into a fresh Parquet folder, an embedded Ray started and stopped by the command.

Each runs as a fresh process tree (so start-up is included: loading TensorFlow Lite and the model, starting Ray;
with two sizes or more, a second table gives the rate between the smallest and the largest run, start-up left out);
its memory is sampled every 0.2 s with psutil over the whole tree (driver, Ray's services and workers). Peak PSS
counts shared pages (Ray's object store, shared libraries) once, split among the processes mapping them; peak RSS
is the plain sum, which counts them once per process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6

CROPS_SCRIPT = """
import sys
import numpy as np
from agegender.data.images import ImageError, load_for_model
from agegender.serving.predict import Predictor

paths = open(sys.argv[1]).read().splitlines()
predictor = Predictor.load()
for start in range(0, len(paths), 64):
    crops = []
    for path in paths[start:start + 64]:
        try:
            crops.append(load_for_model(path, predictor.image_size, predictor.color_mode, predictor.resize))
        except ImageError:
            pass
    predictor.predict_crops(np.stack(crops))
"""


def tree_memory(root: psutil.Process) -> tuple[float, float]:
    """(PSS, RSS) in bytes summed over ``root`` and all its descendants."""
    pss = rss = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return pss, rss


def measure(command: list[str], env: dict[str, str], interval: float = 0.2) -> dict[str, float]:
    """Wall seconds and the peak PSS and RSS (bytes) of ``command``'s process tree; fails if the command does."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak_pss = peak_rss = 0.0
    while process.poll() is None:
        pss, rss = tree_memory(root)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        time.sleep(interval)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "pss": peak_pss, "rss": peak_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,all", help="comma-separated photo counts; 'all' is the whole folder")
    parser.add_argument("--workers", default="1,2", help="comma-separated --num-workers of predict-batch")
    parser.add_argument("--limit", type=int, help="cap every size at this many photos (a quick check)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out: crops,predict,batch")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()

    folder = os.environ.get("UTKFACE_DIR")
    if not folder or not Path(folder).is_dir():
        sys.exit("set UTKFACE_DIR to the UTKFace folder of aligned crops")
    photos = sorted(str(path) for path in Path(folder).iterdir() if path.name.lower().endswith(".jpg"))
    sizes = sorted({min(len(photos) if size == "all" else int(size), args.limit or len(photos))
                    for size in args.sizes.split(",")})
    workers = [int(n) for n in args.workers.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    python = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict_batch_bench_") as scratch:
        for size in sizes:
            listing = Path(scratch) / f"photos_{size}.txt"
            listing.write_text("\n".join(photos[:size]) + "\n")
            runs: list[tuple[str, list[str]]] = []
            if "crops" not in skip:
                runs.append(("one process, Predictor.predict_crops", [python, "-c", CROPS_SCRIPT, str(listing)]))
            if "predict" not in skip:
                sources = [folder] if size == len(photos) else photos[:size]  # the folder: no 21k arguments
                runs.append(("agegender predict --aligned --json",
                             [python, "-m", "agegender.cli", "predict", "--aligned", "--json", *sources]))
            if "batch" not in skip:
                for n in workers:
                    output = Path(scratch) / f"out_{size}_{n}.parquet"
                    runs.append((f"predict-batch, {n} worker{'s' if n > 1 else ''}",
                                 [python, "-m", "agegender.cli", "predict-batch", str(listing), "--aligned",
                                  "--output", str(output), "--num-workers", str(n), "--batch-size",
                                  str(args.batch_size), "--no-progress"]))
            for name, command in runs:
                result = measure(command, env)
                rows.append((name, size, result))
                print(f"{name:<40} {size:>6,} photos {result['seconds']:7.1f} s {size / result['seconds']:6.1f} "
                      f"photos/s  peak PSS {result['pss'] / MB:6.0f} MB  RSS {result['rss'] / MB:6.0f} MB",
                      flush=True)
                for output in Path(scratch).glob("out_*.parquet"):  # a figure counts only for a complete run
                    paths = pq.read_table(output, columns=["path"]).column("path")
                    if len(paths) != size or len(pc.unique(paths)) != size:
                        raise SystemExit(f"{name}: {len(paths):,} rows for {size:,} crops; expected one row per crop")
                for leftover in Path(scratch).glob("out_*.parquet"):
                    shutil.rmtree(leftover)
    table = ["| method | photos | seconds | photos/s | peak PSS MB | peak RSS MB |", "|---|---|---|---|---|---|"]
    table += [f"| {name} | {size:,} | {r['seconds']:.1f} | {size / r['seconds']:.1f} | {r['pss'] / MB:.0f} | "
              f"{r['rss'] / MB:.0f} |" for name, size, r in rows]
    if len(sizes) > 1:  # start-up cancels out between the smallest and the largest run of a method
        table += ["", "| method | photos/s beyond start-up | start-up s (estimated) |", "|---|---|---|"]
        for name in dict.fromkeys(name for name, _, _ in rows):
            (n0, r0), (n1, r1) = [(size, r) for other, size, r in rows if other == name][::len(sizes) - 1]
            if r1["seconds"] <= r0["seconds"]:  # noise larger than the work: no estimate
                table.append(f"| {name} | n/a | n/a |")
                continue
            rate = (n1 - n0) / (r1["seconds"] - r0["seconds"])
            table.append(f"| {name} | {rate:.1f} | {r0['seconds'] - n0 / rate:.1f} |")
    text = "\n".join(table)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(f"`{' '.join(sys.argv)}` on {os.cpu_count()} CPUs (start-up included)\n\n{text}\n")


if __name__ == "__main__":
    main()
