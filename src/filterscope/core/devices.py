"""The check every streaming pass makes before sending batches to a device."""

from __future__ import annotations

import torch
from torch import nn

from .errors import UserInputError

__all__ = ["check_model_device"]


def check_model_device(model: nn.Module, device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, after checking that the model's first tensor lives there.

    Args:
        model: The model the batches will go through (it is not moved).
        device: Where the batches will be sent.

    Raises:
        UserInputError: The model is on another device.
    """
    device = torch.device(device)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != device.type or (
            device.index is not None and tensor.device.index is not None and tensor.device.index != device.index
        ):
            raise UserInputError(
                f"the model is on {tensor.device} but device={str(device)!r}; move it first with model.to({str(device)!r})."
            )
        break
    return device
