"""The model-family registry: one builder per family, called by every engine, reference setup and benchmark contender.

Every model takes raw pixels (float32 0..255, N×S×S×3) and returns softmax probabilities, so that
serving only decodes and resizes. Augmentation layers are inside the model and act in training only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras

from bench.registry import Registry

Builder = Callable[..., keras.Model]


@dataclass(frozen=True)
class Phase:
    """One `fit` of a training schedule: `prepare` sets trainable flags before compiling, and
    `learning_rate` (when set) replaces `params["learning_rate"]` for this phase's optimizer."""

    epochs: int
    learning_rate: float | None = None
    prepare: Callable[[keras.Model], None] | None = None
    name: str = "train"


Schedule = Callable[[keras.Model, dict[str, Any], int], list[Phase]]


def single_phase(model: keras.Model, params: dict[str, Any], epochs: int) -> list[Phase]:
    return [Phase(epochs)]


@dataclass(frozen=True)
class FamilySpec:
    """`build(params, *, image_size, n_classes, seed[, weights])`; `schedule(model, params, epochs)` splits training
    into phases; a `pretrained` family's builder also takes `weights=` (imagenet | none | a path)."""

    name: str
    build: Builder
    schedule: Schedule = single_phase
    pretrained: bool = False


FAMILIES: Registry[FamilySpec] = Registry("model family", FamilySpec)


def register_family(name: str, *, schedule: Schedule = single_phase,
                    pretrained: bool = False) -> Callable[[Builder], Builder]:
    return FAMILIES.decorator(name, schedule=schedule, pretrained=pretrained)


def training_phases(family: str, model: keras.Model, params: dict[str, Any], epochs: int) -> list[Phase]:
    return FAMILIES.get(family).schedule(model, params, epochs)


def list_families() -> list[str]:
    return FAMILIES.names()


def build_model(family: str, params: dict[str, Any], *, image_size: int, n_classes: int, seed: int = 0,
                weights: str = "none") -> keras.Model:
    spec = FAMILIES.get(family)
    options = {"weights": weights} if spec.pretrained else {}  # from-scratch families ignore weights
    return spec.build(params, image_size=image_size, n_classes=n_classes, seed=seed, **options)
