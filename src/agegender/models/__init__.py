"""Models: the architectures' builders and custom layers (builders), the pretrained backbones (backbones/), the VGG16
transfer recipe (transfer) and the face-descriptor step that adds dlib's network to a trained AgeNet
(add_descriptor, with face_age, face_gender and feature_heads).

The names of :mod:`agegender.models.builders` are importable from here, as ``from agegender.models import
build_agenet``.
"""

from .builders import (AGE_BINS, AGE_READOUTS, BUILDERS, SIZE_FLEXIBLE, VGG16_WEIGHTS_HELP, CentralCrop, ExpectedAge,
                       MeanOfViews, MedianAge, MirrorViews, MixedDistribution, MixedGender, VGG16Preprocess,
                       build_agenet, build_model, build_seed_cnn, build_small_resnet, build_vgg16_transfer,
                       with_age_readout)

__all__ = ["AGE_BINS", "AGE_READOUTS", "BUILDERS", "SIZE_FLEXIBLE", "VGG16_WEIGHTS_HELP", "CentralCrop", "ExpectedAge",
           "MeanOfViews", "MedianAge", "MirrorViews", "MixedDistribution", "MixedGender", "VGG16Preprocess",
           "build_agenet", "build_model", "build_seed_cnn", "build_small_resnet", "build_vgg16_transfer",
           "with_age_readout"]
