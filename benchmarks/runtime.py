"""Serving before and after the lean runtime (issue #49): environment size, one photo end to end, FG-NET photos/s.

    FGNET_DIR=../shared/datasets/fgnet nice -n 19 .venv/bin/python benchmarks/runtime.py [--photo FILE] [--runs 5]

Two sides, each in fresh processes started from the repository root:

- **before**: the development venv (``--before-python``, default ``.venv/bin/python``) running ``src/`` of
  ``--before-ref`` (default: the last commit before the change), extracted with ``git archive``: TensorFlow imported
  for ``tf.lite``, pandas for the data package, both model files hashed at every load.
- **after**: ``--after-python`` (default ``.venv-runtime/bin/python``, made by ``make install-runtime``): the
  package as ``pip install .`` installs it, on LiteRT.

Printed per side: the environment's size on disk (MB = 10^6 bytes, every file under its prefix), the wall time,
CPU time (user + system) and peak RSS of ``agegender predict --json --model models/agenet.keras PHOTO`` (medians of
``--runs`` fresh processes, after one untimed run each that warms the page cache and the digest cache), and FG-NET
throughput through the whole-photo path (``evaluate --photos``'s detect, crop, predict; the model loaded once, not
timed): photos/s and CPU ms per photo (all threads), medians of ``--fgnet-runs``. The two sides' runs alternate, so
that other work on the machine weighs on both alike; the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The last commit of main before the lean runtime: how `agegender predict` ran until then.
BEFORE_REF = "12c3271"
MODEL = REPO / "models" / "agenet.keras"

FGNET_CHILD = """
import json, sys, time
from agegender.evaluation.photos import predict_photos, read_labels
from agegender.serving.predict import Predictor
predictor = Predictor.load(sys.argv[1])
photos = read_labels(sys.argv[2])
wall, cpu = time.perf_counter(), time.process_time()
frame = predict_photos(predictor, photos)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"photos": len(photos), "faces": int((frame["status"] == "ok").sum()), "wall": wall, "cpu": cpu}))
"""


def env_size_mb(python: str) -> float:
    """Bytes of every file under the prefix (the venv) of ``python``, in MB (10^6)."""
    prefix = Path(subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                                 check=True).stdout.strip())
    total = 0
    for folder, _, files in os.walk(prefix):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.stat(path).st_size
    return total / 1e6


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-1500:]}")
    process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def fgnet_run(python: str, env: dict[str, str], fgnet: str) -> dict:
    """Photos, faces, wall and CPU seconds of the whole-photo path over FG-NET, in a fresh process."""
    done = subprocess.run([python, "-c", FGNET_CHILD, str(MODEL), os.path.join(fgnet, "labels.csv")], env=env,
                          cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_env(src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGEGENDER_TFLITE_RUNTIME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def measure(sides: dict[str, tuple[str, dict[str, str]]], photo: Path, runs: int, fgnet: str | None,
            fgnet_runs: int) -> dict[str, dict]:
    """Every figure of every side (name -> (python, environment)), the sides' runs alternating."""
    commands = {name: [python, "-m", "agegender.cli", "predict", "--json", "--model", str(MODEL), str(photo)]
                for name, (python, _) in sides.items()}
    predicts: dict[str, list] = {name: [] for name in sides}
    fgnets: dict[str, list] = {name: [] for name in sides}
    loads = []
    for name, (_, env) in sides.items():
        timed_run(commands[name], env)  # warm-up: page cache, digest cache
    for _ in range(runs):
        for name, (_, env) in sides.items():
            predicts[name].append(timed_run(commands[name], env))
        loads.append(os.getloadavg()[0])
    for _ in range(fgnet_runs if fgnet else 0):
        for name, (python, env) in sides.items():
            fgnets[name].append(fgnet_run(python, env, fgnet))
        loads.append(os.getloadavg()[0])
    rows = {}
    for name, (python, _) in sides.items():
        row = {"env_mb": env_size_mb(python), "load": statistics.median(loads),
               **{key: statistics.median(r[i] for r in predicts[name])
                  for i, key in enumerate(("predict_s", "predict_cpu_s", "predict_rss_mb"))}}
        if fgnets[name]:
            row["photos_per_s"] = statistics.median(r["photos"] / r["wall"] for r in fgnets[name])
            row["cpu_ms_per_photo"] = statistics.median(1000 * r["cpu"] / r["photos"] for r in fgnets[name])
            row["faces"] = fgnets[name][0]["faces"]
        rows[name] = row
    return rows


def extract_src(ref: str, folder: Path) -> Path:
    """``src/`` of commit ``ref``, extracted under ``folder`` with ``git archive``."""
    archive = folder / "src.tar"
    with open(archive, "wb") as handle:
        subprocess.run(["git", "archive", ref, "src"], cwd=REPO, stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before-python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--before-ref", default=BEFORE_REF, help="the commit whose src/ the before side runs")
    parser.add_argument("--after-python", default=str(REPO / ".venv-runtime" / "bin" / "python"))
    parser.add_argument("--photo", default=str(REPO / "tests" / "assets" / "face.jpg"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fgnet", default=os.environ.get("FGNET_DIR"), help="FG-NET folder (default: $FGNET_DIR)")
    parser.add_argument("--fgnet-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sides = {"before": (args.before_python, side_env(extract_src(args.before_ref, Path(folder)))),
                 "after": (args.after_python, side_env(None))}
        rows = measure(sides, Path(args.photo), args.runs, args.fgnet, args.fgnet_runs)
    print(f"`agegender predict --json` of {Path(args.photo).name}: medians of {args.runs} fresh processes; FG-NET: "
          f"medians of {args.fgnet_runs} runs; {os.cpu_count()} CPUs\n")
    print("| side | env MB | predict s | predict CPU s | peak RSS MB | FG-NET photos/s | CPU ms/photo | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        fg = f"{row['photos_per_s']:.1f} | {row['cpu_ms_per_photo']:.1f}" if "photos_per_s" in row else " | "
        print(f"| {name} | {row['env_mb']:,.0f} | {row['predict_s']:.2f} | {row['predict_cpu_s']:.2f} | "
              f"{row['predict_rss_mb']:.0f} | {fg} | {row['load']:.1f} |")


if __name__ == "__main__":
    main()
