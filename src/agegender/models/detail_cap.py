"""The detail cap: every input face shrunk to ``side`` px (area average) and enlarged back (bilinear), in the graph.

Our ages rise with the detail a face shows: sharp, large photos read older than UTKFace's crops of the same
people would (research/domain_robustness.md). Capping the detail at ``side`` px makes every input, a phone photo
or a UTKFace crop, look alike to the network; the side was chosen on val and FG-NET by a rule written before the
measurement. Both resizes are linear maps along each axis, so the layer is one fixed ``size x size`` matrix
applied to rows and columns (the same numbers as OpenCV's ``INTER_AREA`` then ``INTER_LINEAR``), and it travels
with the model into its TFLite export: photos, aligned crops and the card's own figures all pass through it.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import layers


def area_matrix(source: int, target: int) -> np.ndarray:
    """``(target, source)``: each output pixel the mean of the source pixels it covers (``target <= source``)."""
    if not 0 < target <= source:
        raise ValueError(f"an area shrink goes from a side of {source} to 1..{source}, not {target}")
    scale = source / target
    matrix = np.zeros((target, source))
    for i in range(target):
        start, stop = i * scale, (i + 1) * scale
        for j in range(int(np.floor(start)), min(int(np.ceil(stop)), source)):
            matrix[i, j] = (min(stop, j + 1) - max(start, j)) / scale
    return matrix


def bilinear_matrix(source: int, target: int) -> np.ndarray:
    """``(target, source)``: linear interpolation at pixel centres, edges clamped, as OpenCV's ``INTER_LINEAR``."""
    matrix = np.zeros((target, source))
    for i in range(target):
        x = max((i + 0.5) * source / target - 0.5, 0.0)
        left = min(int(np.floor(x)), source - 1)
        frac = x - left
        right = min(left + 1, source - 1)
        matrix[i, left] += 1.0 - frac
        matrix[i, right] += frac
    return matrix


def cap_matrix(size: int, side: int) -> np.ndarray:
    """``(size, size)``: shrink to ``side`` then enlarge back, along one axis."""
    return (bilinear_matrix(side, size) @ area_matrix(size, side)).astype("float32")


@keras.saving.register_keras_serializable(package="agegender")
class DetailCap(layers.Layer):
    """Faces ``(N, size, size, C)`` with their detail capped at ``side`` px (see the module's docstring)."""

    def __init__(self, side: int, **kwargs):
        super().__init__(**kwargs)
        self.side = int(side)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height != width:
            raise ValueError(f"the detail cap takes square faces, not {height}x{width}")
        self.matrix = keras.ops.convert_to_tensor(cap_matrix(int(height), self.side))

    def call(self, images):
        # plain 2-D matmuls over reshaped views (an einsum with a free batch size does not convert to TFLite)
        ops, size = keras.ops, self.matrix.shape[0]
        channels = images.shape[-1]
        along_width = ops.reshape(ops.transpose(images, (0, 3, 1, 2)), (-1, size))  # rows of (N, C, H, W)
        along_width = ops.matmul(along_width, ops.transpose(self.matrix))
        along_height = ops.reshape(ops.transpose(ops.reshape(along_width, (-1, channels, size, size)), (0, 1, 3, 2)),
                                   (-1, size))  # columns, as rows of (N, C, W, H)
        along_height = ops.matmul(along_height, ops.transpose(self.matrix))
        return ops.transpose(ops.reshape(along_height, (-1, channels, size, size)), (0, 3, 2, 1))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "side": self.side}


def with_detail_cap(model: keras.Model, side: int) -> keras.Model:
    """``model`` (an ``image`` input, a dict of outputs) behind a :class:`DetailCap`; same outputs, same names."""
    size = model.input_shape[1]
    if not 0 < side < size:
        raise ValueError(f"a detail cap for {size} px faces lies in 1..{size - 1} px, not {side}")
    inputs = keras.Input(model.input_shape[1:], name="image")
    outputs = model(DetailCap(side, name="detail_cap")(inputs))
    named = {key: layers.Identity(name=key)(value) for key, value in outputs.items()}
    return keras.Model(inputs, named, name=model.name)
