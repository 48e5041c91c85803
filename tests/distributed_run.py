"""Trains tiny configs in a fresh process, for tests/test_distribute.py.

Logical CPU devices and the links between workers can only be set up before TensorFlow has run anything, so
each distributed run gets an interpreter of its own:

    python tests/distributed_run.py CONFIGS_JSON DATA_FOLDER OUT_FOLDER [--logical-cpus N]

trains each ``TrainConfig(**config)`` of the JSON list, in order, through the recipe (as ``agegender train``
does) into ``OUT_FOLDER/models/<name>/`` and ``OUT_FOLDER/runs/``, with ``TF_CONFIG`` as the environment gives
it, and prints one JSON line per run: what its card says of the training.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", help="a JSON list of TrainConfig fields")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--logical-cpus", type=int, default=1, help="split the CPU into this many devices")
    args = parser.parse_args()

    import tensorflow as tf

    if args.logical_cpus > 1:  # before anything else runs TensorFlow
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(args.logical_cpus)])

    from agegender.config import TrainConfig
    from agegender.training.recipe import run_recipe

    out = Path(args.out)
    for values in json.loads(args.configs):
        config = TrainConfig(**values)
        card = run_recipe(config, args.data, out_dir=out / "models" / config.output_name, runs_dir=out / "runs",
                          verbose=0)
        training = card["training"]
        print(json.dumps({"name": config.output_name, "distribution": training["distribution"],
                          "precision": training["precision"], "history": training["history"],
                          "wall_seconds": training["wall_seconds"]}), flush=True)


if __name__ == "__main__":
    main()
