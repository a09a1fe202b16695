"""The model as the training loop runs it: wrapped for DistributedDataParallel and ``torch.compile``.

DDP expects every parameter to receive a gradient in every step unless it is told to look for those
that do not, which costs a walk of the autograd graph per step and refuses parameters used outside
the wrapped forward (a decoupled model's mutual-information classifiers are). Some objectives have
phases where parameters get no gradient (a decoupled model's gates, frozen for path fine-tuning), so
the loop asks the objective, epoch by epoch, and wraps the model again when the answer changes.
"""

from __future__ import annotations

import torch
from torch import nn


def wrap_for_training(model: nn.Module, device: torch.device, *, distributed: bool, compile: bool,
                      find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in DDP (when ``distributed``) and ``torch.compile`` (when ``compile``); the model itself is shared."""
    wrapped: nn.Module = model
    if distributed:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                      find_unused_parameters=find_unused_parameters)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def rewrap_for_unused_parameters(setup, objective, epoch: int) -> None:
    """Under DDP, wrap ``setup.model`` again (into ``setup.training_model``) when the objective starts or
    stops leaving parameters without gradient in this epoch (a :class:`~.train.TrainingSetup`)."""
    unused = leaves_parameters_unused(objective, epoch * setup.steps_per_epoch)
    if setup.is_distributed and unused != setup.finds_unused_parameters:
        setup.training_model = wrap_for_training(setup.model, setup.device, distributed=True,
                                                 compile=setup.config.compile, find_unused_parameters=unused)
        setup.finds_unused_parameters = unused


def leaves_parameters_unused(objective, step: int) -> bool:
    """Whether ``objective`` leaves some parameters without gradient from ``step`` on (its optional
    ``leaves_parameters_unused(step)`` method; a plain function never does)."""
    ask = getattr(objective, "leaves_parameters_unused", None)
    return bool(ask(step)) if ask is not None else False
