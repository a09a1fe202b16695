"""The model's final linear layer, found by what runs (never by an attribute name).

Algorithm 1 reads its features at this layer's input, and the decomposed layer replaces it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...core.errors import UserInputError
from ...core.hooks import Hooks
from ...core.units import probe_input, probe_mode

__all__ = ["FINAL", "FinalLayer", "find_final_linear"]

#: ``at`` value for the input of the final linear layer (any other value names a unit).
FINAL = "final"


@dataclass
class FinalLayer:
    """The model's final linear layer, found by running the model once.

    Attributes:
        name: Qualified name of the module in the model (``"linear"``, ``"fc"``, ``"classifier.6"``).
        module: The ``nn.Linear`` itself (the caller's module, not a copy).
    """

    name: str
    module: nn.Linear = field(repr=False)

    @property
    def in_features(self) -> int:
        """Width of the features the layer reads."""
        return self.module.in_features

    @property
    def out_features(self) -> int:
        """Number of classes the layer scores."""
        return self.module.out_features


def _leaf_modules_with_parameters(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]


def find_final_linear(model: nn.Module, example_input: torch.Tensor | Sequence[int] = (3, 32, 32)) -> FinalLayer:
    """Find the layer that computes the model's class scores: the last layer with parameters called in forward.

    The model runs once on ``example_input`` (or a random batch-1 input of that ``(C, H, W)``
    size) in eval mode without gradients; forward hooks on every module that owns parameters
    record the order of the calls and are removed afterwards, and every training flag is restored.
    The layer is found by what runs, never by an attribute name.

    Args:
        model: Any classifier.
        example_input: A batch of inputs, or the ``(channels, height, width)`` of one input.

    Returns:
        The :class:`FinalLayer`.

    Raises:
        UserInputError: The last layer with parameters is not an ``nn.Linear`` (its type and name
            are given), its output is not the model's output width, or it reads features of
            more than one dimension.
    """
    if not isinstance(example_input, torch.Tensor):
        example_input = probe_input(model, tuple(example_input))
    calls: list[tuple[str, nn.Module, torch.Size]] = []

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            shape = inputs[0].shape if inputs and isinstance(inputs[0], torch.Tensor) else torch.Size()
            calls.append((name, module, shape))

        return hook

    with Hooks() as hooks:
        for name, module in _leaf_modules_with_parameters(model):
            hooks.forward(module, record(name))
        with probe_mode(model):
            output = model(example_input)
    if not calls:
        raise UserInputError(
            f"{type(model).__name__} ran no layer with parameters; pass a trained classifier that ends in an nn.Linear layer."
        )
    name, module, input_shape = calls[-1]
    if not isinstance(module, nn.Linear):
        raise UserInputError(
            f"the last layer of {type(model).__name__} is {type(module).__name__} {name!r}, not nn.Linear; "
            "pass a model whose class scores come from a final nn.Linear layer (e.g. global pooling, then nn.Linear)."
        )
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if isinstance(output, torch.Tensor) and output.dim() >= 2 and output.shape[-1] != module.out_features:
        raise UserInputError(
            f"the last linear layer {name!r} has {module.out_features} outputs but the model returns "
            f"{output.shape[-1]} scores; pass a model whose output is the final nn.Linear layer's output."
        )
    if len(input_shape) != 2:
        raise UserInputError(
            f"the final linear layer {name!r} reads inputs of shape {tuple(input_shape)}, not (batch, features); "
            "pass a model that flattens its features before the final nn.Linear layer."
        )
    return FinalLayer(name, module)
