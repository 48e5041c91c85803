"""Running TFLite (LiteRT) models: the face detector and the exported age/gender models.

The exported model gives the same outputs as the Keras model it came from (checked when it is
written, see :mod:`agegender.serving.export`) at a fraction of the load time and per-call overhead,
which is what a webcam loop and a command-line call need. Models run on LiteRT (``ai-edge-litert``,
installed by ``pip install .``), which needs no TensorFlow; a training install without it falls back to
TensorFlow's ``tf.lite`` (``AGEGENDER_TFLITE_RUNTIME=litert|tensorflow`` chooses).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

RUNTIMES = ("litert", "tensorflow")


def interpreter_class(runtime: str | None = None) -> type:
    """The TFLite interpreter class of ``runtime`` (default ``$AGEGENDER_TFLITE_RUNTIME``, else LiteRT when
    installed, else TensorFlow's)."""
    runtime = runtime or os.environ.get("AGEGENDER_TFLITE_RUNTIME") or None
    if runtime not in (None, *RUNTIMES):
        raise ValueError(f"AGEGENDER_TFLITE_RUNTIME must be one of {RUNTIMES}, not {runtime!r}")
    if runtime in (None, "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

            return Interpreter
        except ImportError:
            if runtime == "litert":
                raise RuntimeError("LiteRT is not installed: pip install ai-edge-litert==2.3.0") from None
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeError("no TFLite runtime: install LiteRT (pip install ai-edge-litert==2.3.0, part of "
                           "`pip install .`)") from None
    return tf.lite.Interpreter


def make_interpreter(path: str | os.PathLike, num_threads: int, runtime: str | None = None):
    """A TFLite interpreter with its tensors allocated (see :func:`interpreter_class` for ``runtime``)."""
    Interpreter = interpreter_class(runtime)
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
        interpreter_class()  # no runtime installed: its own error, not a damaged model
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
