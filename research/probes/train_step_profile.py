"""Where an AgeNet training step spends its time: TensorFlow op types by total duration (ms per step).

Profiles ``train_on_batch`` with the TensorFlow profiler and sums the op events of the trace by op type.
Durations are summed over the threads that ran them, so they can add up to more than the step's wall
time on two cores; the ranking is what matters. ``--keras-batch-norm`` builds the backbone with Keras's own
``BatchNormalization`` instead of the fused one (``agegender.models.backbones.batch_norm``), which is how the
element-wise ops of the unfused layer were found.

    python research/probes/train_step_profile.py [--size 128] [--steps 2] [--top 15] [--keras-batch-norm]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _timing (shared with benchmarks/)

from _timing import agenet_with_random_batch  # noqa: E402


def op_milliseconds(xspace_bytes: bytes) -> collections.Counter:
    """Total duration in ms per TensorFlow op type in a serialized ``XSpace``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes)
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                scope, _, op_type = names.get(event.metadata_id, "").rpartition(":")
                # op events are "scope/name:OpType"; the executor's own ("ExecutorState::Process",
                # "EagerLocalExecute: __inference_...") span whole steps and would count everything twice
                if scope and not scope.endswith(":") and op_type.isidentifier():
                    totals[op_type] += event.duration_ps / 1e9
    return totals


def profile_train_step(size: int, steps: int, batch: int = 64, fused_batch_norm: bool = True) -> collections.Counter:
    import tensorflow as tf

    model, x, y = agenet_with_random_batch(size, batch, backbone_weights=None, fused_batch_norm=fused_batch_norm)
    for _ in range(2):  # tracing and warm-up stay out of the profile
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        traces = sorted(Path(logdir).rglob("*.xplane.pb"))
        if not traces:
            raise RuntimeError(f"the TensorFlow profiler wrote no trace under {logdir}")
        totals = op_milliseconds(traces[-1].read_bytes())
    return collections.Counter({op: ms / steps for op, ms in totals.items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--keras-batch-norm", action="store_true")
    args = parser.parse_args()
    per_step = profile_train_step(args.size, args.steps, fused_batch_norm=not args.keras_batch_norm)
    kind = "Keras" if args.keras_batch_norm else "fused"
    print(f"AgeNet training step, {args.size} px, batch 64, {kind} batch normalization, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'op type':<48} {'ms/step':>8}")
    for op, ms in per_step.most_common(args.top):
        print(f"{op:<48} {ms:>8.1f}")
    print(f"{'all op types':<48} {sum(per_step.values()):>8.1f}")


if __name__ == "__main__":
    main()
