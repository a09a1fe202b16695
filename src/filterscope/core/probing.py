"""Running a model once on a random probe input, without changing it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import UserInputError

__all__ = ["ProbeRunError", "check_input_size", "probe_failure", "probe_input", "probe_mode"]


def check_input_size(input_size: Any) -> tuple[int, int, int]:
    """``input_size`` as a ``(channels, height, width)`` tuple, or one clear error.

    Raises:
        UserInputError: ``input_size`` is not three positive integers.
    """
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 3
        or not all(isinstance(size, int) and size > 0 for size in input_size)
    ):
        raise UserInputError(
            f"input_size must be (channels, height, width) as three positive integers, got {input_size!r}; "
            "pass e.g. input_size=(3, 32, 32)."
        )
    return tuple(input_size)  # type: ignore[return-value]


def probe_input(model: nn.Module, input_size: tuple[int, int, int]) -> torch.Tensor:
    """A batch-1 random input of ``input_size`` on the model's device and in its floating dtype.

    Uses its own seeded generator, so the global random state is left alone and repeated
    calls give the same input.

    Args:
        model: The model the input is for.
        input_size: ``(channels, height, width)``.

    Returns:
        A tensor of shape ``(1, *input_size)``.
    """
    input_size = check_input_size(input_size)
    device, dtype = torch.device("cpu"), torch.get_default_dtype()
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            device, dtype = tensor.device, tensor.dtype
            break
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, *input_size), generator=generator).to(device=device, dtype=dtype)


@contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Run the model in eval mode without gradients, then restore every module's training flag.

    Eval mode keeps BatchNorm running statistics untouched and lets a batch of one through;
    the flags are restored in ``finally``, after success and after an error alike.

    Args:
        model: The model about to be run on a probe input.
    """
    training_flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in training_flags:
            module.training = training


class ProbeRunError(Exception):
    """The model (or its traced graph) raised while running on the probe input.

    Attributes:
        error: The exception the model raised.
    """

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def probe_failure(model: nn.Module, input_size: tuple[int, int, int], error: Exception) -> UserInputError:
    """The error to raise when ``model`` did not run on a probe input: it names the input size to pass.

    Args:
        model: The model that raised (it has at least one ``nn.Conv2d``).
        input_size: The ``(channels, height, width)`` it was run on.
        error: What it raised.
    """
    message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    return UserInputError(
        f"{type(model).__name__} did not run on a random input of shape (1, {', '.join(map(str, input_size))}) "
        f"({message}); pass the input size it expects as input_size=(channels, height, width), e.g. "
        f"input_size=({first_conv.in_channels}, 32, 32) for CIFAR-sized or ({first_conv.in_channels}, 224, 224) "
        "for ImageNet-sized inputs."
    )
