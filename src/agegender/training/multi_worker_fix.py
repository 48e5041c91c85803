"""Two corrections that let Keras 3's ``model.fit`` train under ``MultiWorkerMirroredStrategy`` with more than one
worker (keras-team/keras#20585, open for Keras 3.7 to 3.15 at least; without them the first ``fit`` fails).

1. Before training, Keras reads one batch to build the model and averages it over the replicas with
   ``strategy.reduce``, which ``MultiWorkerMirroredStrategy`` cannot do for a structure (``(images, {targets})``):
   "Attempt to convert a value (PerReplica...) to a Tensor". The batch only gives the shapes to build with, so
   each worker's own first replica's part serves as well, and needs no communication.
2. After each step, Keras averages the replicas' metric values with ``strategy.reduce("MEAN", value, axis=0)``,
   which fails on the scalar values every metric returns ("Invalid reduction dimension 0 for input with 0
   dimensions"). The mean over the replicas alone (``axis=None``) is what the other strategies compute.

Both replace Keras functions only for a strategy in multi-worker mode; everything else calls the originals.
:func:`apply` is called once, when a run's multi-worker strategy is made; the multi-worker test in
``tests/test_distribute.py`` fails if either is missing or no longer fits the installed Keras.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from keras import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

_applied = False


def _in_multi_worker_mode(strategy: Any) -> bool:
    return bool(strategy is not None and tf_trainer._collective_all_reduce_multi_worker(strategy))


def _first_local_replica(value: Any, strategy: tf.distribute.Strategy) -> Any:
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def apply() -> None:
    """Install both corrections in Keras's TensorFlow trainer (once per process)."""
    global _applied
    if _applied:
        return
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or not _in_multi_worker_mode(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:  # as Keras does: the first batch, then build from it
            data_batch = tree.map_structure(lambda v: _first_local_replica(v, strategy), next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _in_multi_worker_mode(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _applied = True
