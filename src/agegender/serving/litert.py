"""Running TFLite (LiteRT) models: the face detector and the exported age/gender models.

The exported model gives the same outputs as the Keras model it came from (checked when it is
written, see :mod:`agegender.serving.export`) at a fraction of the load time and per-call overhead,
which is what a webcam loop and a command-line call need.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def make_interpreter(path: str | os.PathLike, num_threads: int):
    """A TFLite interpreter: LiteRT's (ai-edge-litert) when installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


class TFLiteModel:
    """An exported age/gender model: float32 images (N, H, W, C) in, the Keras model's outputs out.

    ``infer`` takes any batch size (the interpreter is resized when it changes). Not thread-safe:
    callers that share one instance between threads hold a lock, as the app does.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        self.path = Path(path)
        try:
            self._interpreter = make_interpreter(self.path, num_threads or os.cpu_count() or 1)
            signatures = self._interpreter.get_signature_list()
            signature = next(iter(signatures))
            self._runner = self._interpreter.get_signature_runner(signature)
            self._input_name = signatures[signature]["inputs"][0]
        except (ValueError, RuntimeError, StopIteration, IndexError, KeyError) as exc:
            raise ValueError(f"{self.path} is not a usable TFLite model: {exc}") from None
        detail = self._runner.get_input_details()[self._input_name]
        self.input_shape = (None, *(int(d) for d in detail["shape"][1:]))

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(images, dtype=np.float32)
        if batch.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"{self.path.name} expects images of shape {self.input_shape[1:]}, got {batch.shape[1:]}")
        return {name: np.asarray(value) for name, value in self._runner(**{self._input_name: batch}).items()}

    def __repr__(self) -> str:
        return f"TFLiteModel({self.path.name!r})"
