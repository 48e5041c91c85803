"""Where a training run computes: one device, every device of this machine, or several machines.

``TrainConfig.distribution`` chooses a ``tf.distribute`` strategy (:func:`distribution_for`):

- ``none``: TensorFlow's default strategy, one device (what every run did before this option existed);
- ``mirrored``: ``MirroredStrategy`` over this machine's GPUs, or its logical CPU devices when it has none;
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the machines the ``TF_CONFIG`` environment variable
  lists, one process per machine, each started with the same command.

``batch_size`` stays the global batch: ``tf.distribute`` splits each batch over the replicas and Keras scales
the losses so that the gradient is the one of the whole batch. Batch normalization still computes its moments
per replica, on ``batch_size / replicas`` images.

With several workers every process trains, but only the chief (:func:`is_chief`) writes into the real run and
model folders; the others write into a temporary folder that is deleted when they finish (the usual
``tf.distribute`` pattern), so one model and one card come out. Anything a worker decides on its own (the
time budget, which epoch to resume from) must be the same on every worker, or the replicas drift apart or
wait forever for each other: :func:`chief_value` and :func:`check_workers_agree` make it so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from ..config import DISTRIBUTIONS, TrainConfig
from . import multi_worker_fix

log = logging.getLogger(__name__)

TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')
#: The policy of ``mixed_precision``: float16 compute, float32 weights (Keras wraps the optimizer in a loss scaler).
MIXED_POLICY = "mixed_float16"


class DistributionError(ValueError):
    """A distribution setting that cannot work here: a bad TF_CONFIG, mixed precision without a GPU, ..."""


# -- TF_CONFIG ----------------------------------------------------------------------------------------
def read_tf_config(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The cluster in ``TF_CONFIG``, checked: ``{"cluster": {"worker": [...], ["chief": [...]]}, "task": {...}}``.

    TensorFlow itself accepts a malformed one and fails later, often by waiting forever for a worker that
    was never listed; this names what is wrong before anything starts.
    """
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise DistributionError("distribution 'multi_worker' reads the machines from the TF_CONFIG environment "
                                "variable, which is not set; set it on every machine, e.g. "
                                f"TF_CONFIG='{TF_CONFIG_EXAMPLE}' (each with its own task index)")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DistributionError(f"TF_CONFIG is not valid JSON ({exc}); expected e.g. {TF_CONFIG_EXAMPLE}") from None
    if not isinstance(tf_config, dict):
        raise DistributionError(f"TF_CONFIG must be a JSON object like {TF_CONFIG_EXAMPLE}, not {text!r}")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise DistributionError(f"TF_CONFIG needs a 'cluster' and a 'task' object, e.g. {TF_CONFIG_EXAMPLE}")
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise DistributionError(f"TF_CONFIG's cluster may list 'worker' and 'chief' machines only (synchronous "
                                f"training on all of them), not {unsupported}")
    if not cluster.get("worker") and not cluster.get("chief"):
        raise DistributionError("TF_CONFIG's cluster lists no machine: give 'worker' a list of 'host:port' addresses")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise DistributionError(f"TF_CONFIG's cluster.{job} must be a list of 'host:port' addresses, not "
                                    f"{addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise DistributionError("TF_CONFIG's cluster may have one 'chief' only")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise DistributionError(f"TF_CONFIG's task.type is {kind!r}, which its cluster does not list "
                                f"({sorted(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise DistributionError(f"TF_CONFIG's task.index must be this machine's place in cluster.{kind} "
                                f"(0..{len(cluster[kind]) - 1}), not {index!r}")
    return tf_config


def _is_address(address: object) -> bool:
    host, sep, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
    return bool(host and sep and port.isdigit())


def is_chief(tf_config: Mapping[str, Any]) -> bool:
    """Whether this task writes the run's files: the ``chief`` if the cluster has one, else worker 0."""
    task, cluster = tf_config["task"], tf_config["cluster"]
    if "chief" in cluster:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def worker_count(tf_config: Mapping[str, Any]) -> int:
    return sum(len(tf_config["cluster"].get(job, [])) for job in ("chief", "worker"))


def writes_outputs(config: TrainConfig, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process writes the run's files and does the stages after training (all but multi-worker's
    non-chief workers)."""
    return config.distribution != "multi_worker" or is_chief(read_tf_config(environ))


# -- the strategy -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distribution:
    """The strategy a run trains under, and what the card records of it."""

    kind: str  # one of DISTRIBUTIONS
    strategy: tf.distribute.Strategy
    chief: bool = True  # writes the run's files (multi-worker: one process only)
    workers: int = 1
    precision: str = "float32"  # the Keras dtype policy the model is built with

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def card(self) -> dict[str, Any]:
        return {"distribution": {"strategy": self.kind, "replicas": self.replicas, "workers": self.workers},
                "precision": self.precision}

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build, load and compile the model in here: its variables, optimizer and metrics are then the
        strategy's (mirrored), and its layers compute in :attr:`precision`."""
        with self.strategy.scope(), _dtype_policy(self.precision):
            yield


_multi_worker_strategy: tf.distribute.Strategy | None = None


def distribution_for(config: TrainConfig, environ: Mapping[str, str] = os.environ) -> Distribution:
    """The strategy ``config.distribution`` asks for. Call it before TensorFlow runs anything else in the
    process: several workers set up their communication only then."""
    if config.distribution not in DISTRIBUTIONS:
        raise DistributionError(f"distribution must be one of {list(DISTRIBUTIONS)}, not {config.distribution!r}")
    precision = _precision(config.mixed_precision)
    if config.distribution == "none":
        return Distribution("none", tf.distribute.get_strategy(), precision=precision)
    if config.distribution == "mirrored":
        devices = local_devices()
        if len(devices) == 1:
            log.warning("distribution 'mirrored' has one device here (%s): it trains as on one device, with the "
                        "overhead of the strategy", devices[0])
        return Distribution("mirrored", tf.distribute.MirroredStrategy(devices), precision=precision)
    tf_config = read_tf_config(environ)
    return Distribution("multi_worker", _multi_worker(), chief=is_chief(tf_config),
                        workers=worker_count(tf_config), precision=precision)


def local_devices() -> list[str]:
    """This machine's GPUs, or else its logical CPU devices (one unless the process split its CPU)."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def _multi_worker() -> tf.distribute.Strategy:
    """One ``MultiWorkerMirroredStrategy`` per process: TensorFlow's collective ops are set up once, and only
    before it has run anything."""
    global _multi_worker_strategy
    if _multi_worker_strategy is None:
        try:
            _multi_worker_strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            raise DistributionError(f"distribution 'multi_worker' must start before TensorFlow runs anything in "
                                    f"this process ({exc}); run each worker as its own `agegender train`") from exc
        multi_worker_fix.apply()  # Keras's fit needs two corrections under several workers
    return _multi_worker_strategy


def _precision(mixed: bool) -> str:
    """``mixed_float16`` for ``mixed_precision`` on a GPU. Without a GPU it is refused rather than ignored: a
    CPU computes float16 more slowly than float32, and a run silently in float32 would not be what was asked."""
    if not mixed:
        return "float32"
    if not tf.config.list_physical_devices("GPU"):
        raise DistributionError("mixed_precision needs a GPU (float16 is slower than float32 on a CPU, and no GPU "
                                "is visible here); set mixed_precision to false")
    return MIXED_POLICY


@contextlib.contextmanager
def _dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` for the layers built inside, and restored after (it is global:
    a later model in the same process, e.g. the descriptor stage's, must not inherit it)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def float32_config(config: Any) -> Any:
    """A model config (``get_config()``) with every mixed-precision layer policy replaced by float32.

    The served model computes in float32 whatever the training precision was: serving runs on CPUs, and the
    TFLite export makes its own float16 weights.
    """
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and config.get("config", {}).get("name") == MIXED_POLICY:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [float32_config(value) for value in config]
    return config


# -- keeping the workers in step ----------------------------------------------------------------------
def _sum_over_workers(distribution: Distribution, values: list[float]) -> list[float]:
    """Each worker's ``values`` summed over the workers (a collective: every worker must call it, in step)."""
    strategy = distribution.strategy
    local_replicas = distribution.replicas // distribution.workers  # the same on every worker
    # in a tf.function: run eagerly, the strategy warns of its overhead on every call
    shares = tf.function(lambda v: strategy.run(lambda x: x / local_replicas, args=(v,)))
    per_replica = shares(tf.constant(values, tf.float64))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy().tolist()


def chief_value(distribution: Distribution, value: float) -> float:
    """The chief's ``value`` on every worker (``value`` itself on one machine).

    The time budget stops a run, or shortens its schedule, by the measured epoch times; workers that measured
    differently would decide differently. Taking the chief's times makes every worker decide as the chief.
    """
    if distribution.workers == 1:
        return value
    return _sum_over_workers(distribution, [value if distribution.chief else 0.0])[0]


def check_workers_agree(distribution: Distribution, epochs_done: int) -> None:
    """Refuse to train when the workers would start from different epochs (one resumes, another starts
    afresh): their weights would differ and one would wait forever for the others' last steps."""
    if distribution.workers == 1:
        return
    total, squares = _sum_over_workers(distribution, [float(epochs_done), float(epochs_done) ** 2])
    mean = total / distribution.workers
    if squares / distribution.workers - mean ** 2 > 1e-6:
        raise DistributionError(f"the workers would start from different epochs (this one after epoch {epochs_done}, "
                                f"the mean over workers is {mean:g}): every worker must see the chief's run folder "
                                "(a shared file system, or a copy) to resume, or start all of them with --fresh")


@contextlib.contextmanager
def run_folder(distribution: Distribution, run_dir: Path) -> Iterator[Path]:
    """Where this process keeps its run state: ``run_dir`` itself for the chief, a temporary copy of it for the
    other workers (they resume from the chief's checkpoint, write only their own copy, and delete it)."""
    if distribution.chief:
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"agegender-worker-{run_dir.name}-"))
    try:
        copy = scratch / run_dir.name
        if run_dir.is_dir():
            shutil.copytree(run_dir, copy)
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def output_folder(distribution: Distribution, models_dir: Path) -> Iterator[Path]:
    """Where this process writes the final model and card: ``models_dir`` for the chief, a temporary folder
    that is deleted afterwards for the other workers."""
    if distribution.chief:
        yield models_dir
        return
    with tempfile.TemporaryDirectory(prefix="agegender-worker-models-") as scratch:
        yield Path(scratch)


def local_tf_configs(workers: int, host: str = "localhost") -> list[str]:
    """``TF_CONFIG`` values for ``workers`` processes of this machine, on free ports: a multi-worker run to try
    or test on one machine (worker 0 is the chief)."""
    import socket

    ports = []
    sockets = [socket.socket() for _ in range(workers)]
    try:
        for sock in sockets:  # all bound at once, so no port is handed out twice
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(workers)]
