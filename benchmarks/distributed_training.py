"""Training steps per second on one device, on two logical CPU devices (``mirrored``) and on one or two local
workers (``multi_worker``), at the same global batch.

Each variant runs in fresh processes (logical devices and worker links are set up before TensorFlow runs
anything), builds the model and compiles it as ``agegender train`` does (``distribution_for``, its scope,
``compile_model``), feeds it random faces through ``make_dataset`` and times ``model.fit`` after a warm-up. On a
CPU the devices share the same cores, so this measures the strategies' overhead, not a speed-up:

    python benchmarks/distributed_training.py                    # seed CNN, 128 px, global batch 64, 20 steps
    python benchmarks/distributed_training.py --model agenet     # AgeNet at the default recipe's size
    python benchmarks/distributed_training.py --tiny             # 64 px, batch 16, 3 steps: checks it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: label, distribution, logical CPU devices per process, worker processes
VARIANTS: tuple[tuple[str, str, int, int], ...] = (
    ("one device", "none", 1, 1),
    ("mirrored, 2 logical CPU devices", "mirrored", 2, 1),
    ("multi_worker, 1 local worker", "multi_worker", 1, 1),
    ("multi_worker, 2 local workers", "multi_worker", 1, 2),
)
#: model -> (input side, colour mode, builder arguments); AgeNet as configs/agenet.json trains it, without
#: pretrained weights (speed does not depend on them)
MODELS = {"seed_cnn": (128, "grayscale", {}),
          "agenet": (128, "rgb", {"backbone": "lite2", "backbone_weights": None, "trainable_from": None,
                                  "dropout": 0.3})}


def run_variant(distribution: str, model: str, size: int, batch: int, steps: int, warmup: int,
                logical_cpus: int) -> dict:
    """In this process: the steps per second of ``model`` under ``distribution`` (TF_CONFIG from the
    environment)."""
    import tensorflow as tf

    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    import numpy as np

    from agegender.config import TrainConfig
    from agegender.data.images import channels
    from agegender.data.pipeline import make_dataset
    from agegender.models.builders import build_model
    from agegender.training.distribution import distribution_for
    from agegender.training.loop import compile_model

    _, color_mode, kwargs = MODELS[model]
    config = TrainConfig(model=model, image_size=size, color_mode=color_mode, batch_size=batch,
                         distribution=distribution, optimizer="adamw")
    dist = distribution_for(config)
    with dist.scope():
        network = build_model(model, size, channels(color_mode), **kwargs)
        compile_model(network, config, steps)
    rng = np.random.default_rng(0)
    count = batch * 4
    images = rng.integers(0, 256, (count, size, size, channels(color_mode)), dtype=np.uint8)
    dataset = make_dataset(images, rng.integers(1, 80, count), rng.integers(0, 2, count), batch_size=batch,
                           training=True, age_distribution="age_dist" in network.output_names).repeat()
    network.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)  # traces the step
    start = time.perf_counter()
    network.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    return {"steps_per_second": steps / seconds, "replicas": dist.replicas, "chief": dist.chief}


def measure(distribution: str, logical_cpus: int, workers: int, args: argparse.Namespace) -> dict:
    """One variant in ``workers`` fresh processes; the chief's figure (the workers step together)."""
    from agegender.training.distribution import local_tf_configs

    command = [sys.executable, __file__, "--run", distribution, "--logical-cpus", str(logical_cpus),
               "--model", args.model, "--size", str(args.size), "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tf_configs = local_tf_configs(workers) if distribution == "multi_worker" else [None]
    processes = [subprocess.Popen(command, env={**env, **({"TF_CONFIG": tf_config} if tf_config else {})},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for tf_config in tf_configs]
    results = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode:
            for other in processes:
                other.kill()
            return {"error": (err.strip().splitlines() or ["failed"])[-1]}
        results.append(json.loads(out.strip().splitlines()[-1]))
    return next(result for result in results if result["chief"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="seed_cnn")
    parser.add_argument("--size", type=int, help="input side (default: the model's, 64 with --tiny)")
    parser.add_argument("--batch", type=int, help="global batch (default 64, 16 with --tiny)")
    parser.add_argument("--steps", type=int, help="timed steps (default 20, 3 with --tiny)")
    parser.add_argument("--warmup", type=int, help="steps before timing (default 3, 1 with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a few small steps: checks that every variant runs")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one variant in this process
    parser.add_argument("--logical-cpus", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = {"size": 64 if args.tiny else MODELS[args.model][0], "batch": 16 if args.tiny else 64,
                "steps": 3 if args.tiny else 20, "warmup": 1 if args.tiny else 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.run:
        print(json.dumps(run_variant(args.run, args.model, args.size, args.batch, args.steps, args.warmup,
                                     args.logical_cpus)))
        return

    print(f"{args.model} training, {args.size} px, global batch {args.batch}, {args.steps} timed steps after "
          f"{args.warmup}; {os.cpu_count()} CPUs")
    print(f"{'variant':<36} {'replicas':>8} {'steps/s':>8} {'images/s':>9} {'vs one device':>14}")
    baseline = None
    for label, distribution, logical_cpus, workers in VARIANTS:
        result = measure(distribution, logical_cpus, workers, args)
        if "error" in result:
            print(f"{label:<36} failed: {result['error']}")
            continue
        rate = result["steps_per_second"]
        baseline = baseline or rate
        print(f"{label:<36} {result['replicas']:>8} {rate:>8.2f} {rate * args.batch:>9.1f} {rate / baseline:>13.2f}x")


if __name__ == "__main__":
    main()
