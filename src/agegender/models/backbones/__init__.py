"""Pretrained image backbones (Keras 3, functional API)."""

from agegender.models.backbones.efficientnet_lite import (
    MEAN_RGB,
    STD_RGB,
    VARIANTS,
    build_efficientnet_lite,
    build_efficientnet_lite0,
    default_weights_path,
)

__all__ = [
    "MEAN_RGB",
    "STD_RGB",
    "VARIANTS",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "default_weights_path",
]
