"""The model registry: the single list of built-in model names.

``@register_model("resnet20", ...)`` adds a builder; :func:`create_model` builds one, optionally
loading a checkpoint. Built-in models are a convenience: every analysis also takes any
``nn.Module``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..core.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What a built-in model needs besides its weights.

    Attributes:
        name: registry name.
        builder: ``builder(num_classes) -> nn.Module``.
        input_shape: (C, H, W) the model is built for.
        mean: per-channel input mean on pixels scaled to [0, 1].
        std: per-channel input standard deviation.
        default_num_classes: classes of the data set the model is usually trained on.
        description: one line for ``filterscope models``.
    """

    name: str
    builder: Callable[[int], nn.Module]
    input_shape: tuple[int, int, int] = (3, 32, 32)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    default_num_classes: int = 10
    description: str = ""
    extra: dict = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, **spec_fields) -> Callable:
    """Decorator that registers ``builder(num_classes) -> nn.Module`` under ``name``."""

    def decorate(builder: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is registered twice")
        MODELS[name] = ModelSpec(name=name, builder=builder, **spec_fields)
        return builder

    return decorate


def model_spec(name: str) -> ModelSpec:
    """The registered spec of ``name``, or a clear error listing the known names."""
    if name not in MODELS:
        raise UserInputError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}."
        )
    return MODELS[name]


def create_model(name: str, num_classes: int | None = None, weights: str | None = None) -> nn.Module:
    """Build a registered model, optionally loading a checkpoint.

    Args:
        name: a registered name (see ``MODELS``).
        num_classes: output classes; defaults to the model's usual data set.
        weights: path to a checkpoint (a raw state dict, or a dict holding ``state_dict`` or
            ``model``; a ``module.`` prefix from DataParallel is stripped).

    Returns:
        The model in evaluation mode.
    """
    spec = model_spec(name)
    if num_classes is not None and num_classes < 1:
        raise UserInputError(f"num_classes must be at least 1, got {num_classes}.")
    model = spec.builder(num_classes or spec.default_num_classes)
    if weights is not None:
        from .checkpoint import load_weights

        load_weights(model, weights)
    return model.eval()
