"""Models: the family registry (one builder per family, for every engine, reference and contender), the shared
blocks, the `scratch_cnn` family and the pretrained `backbone` family with its backbone registry. Imports only
the core.

Every model takes raw pixels (float32 0..255, N×S×S×3) and returns softmax probabilities, so that serving only
decodes and resizes. Augmentation layers are inside the model and act in training only.
"""

from bench.models import backbone, scratch_cnn  # noqa: F401  (each registers its family)
from bench.models.backbone import freeze, schedule
from bench.models.backbones import BACKBONES, BackboneSpec, create_backbone, list_backbones, register_backbone
from bench.models.blocks import augmentation, head
from bench.models.family import (
    FAMILIES, FamilySpec, Phase, build_model, list_families, register_family, training_phases,
)

__all__ = ["BACKBONES", "FAMILIES", "BackboneSpec", "FamilySpec", "Phase", "augmentation", "build_model",
           "create_backbone", "freeze", "head", "list_backbones", "list_families", "register_backbone",
           "register_family", "schedule", "training_phases"]
