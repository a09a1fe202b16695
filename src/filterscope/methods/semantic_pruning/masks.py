"""Pruning without copying the model: forward hooks that zero the pruned filters' outputs.

A pruned filter's output is set to zero where it leaves its unit: at the BatchNorm output (the
conv output for a unit without BatchNorm), before the activation and before any residual
addition — exactly what physically removing the filter and its BatchNorm channel does
(:mod:`filterscope.methods.semantic_pruning.export`). Masks are applied by forward hooks that multiply
each unit's output by a per-sample channel mask; :func:`evaluate_masks` evaluates many masks at
once by repeating each test batch once per mask along the batch dimension, so no model is
ever copied and the caller's model is not changed (the hooks are removed in ``finally``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ...core.hooks import Hooks
from ...core.units import Unit

__all__ = ["mask_hooks", "mask_point"]


def mask_point(unit: Unit) -> nn.Module:
    """The module whose output a pruned filter of ``unit`` is zeroed at: its BatchNorm, or its conv without one."""
    return unit.bn if unit.bn is not None else unit.conv


@contextlib.contextmanager
def mask_hooks(units: Sequence[Unit], keep: dict[str, torch.Tensor]) -> Iterator[None]:
    """Zero the pruned channels of each unit's output (BatchNorm output, or conv output without BatchNorm).

    ``keep[name]`` is ``(masks, channels)`` of 0/1 values: a batch of ``masks · B`` samples is
    read as ``masks`` consecutive groups of ``B``, and in group ``m`` the channels where row
    ``m`` is 0 are set to zero. A ``(channels,)`` mask applies to every sample. The write is in
    place (inference only), so hooks registered later on the same module see the masked
    tensor. The hooks are removed when the block ends, after an error too.

    Args:
        units: The units to mask (units absent from ``keep`` are left alone).
        keep: Per-unit keep masks on the model's device.
    """

    def hook_for(mask: torch.Tensor):
        rows = mask.reshape(-1, mask.shape[-1])
        groups = rows.shape[0]
        # Only the pruned channels are written (a fill, no read), instead of multiplying every
        # channel by its 0/1 mask: one full pass over each masked activation map less, which is
        # most of what masking costs on narrow networks (measured on ResNet-56).
        pruned = [(group, torch.nonzero(row == 0).flatten()) for group, row in enumerate(rows)]
        pruned = [(group, channels) for group, channels in pruned if channels.numel()]

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shaped = output.view(groups, output.shape[0] // groups, output.shape[1], -1)
            for group, channels in pruned:
                shaped[group].index_fill_(1, channels, 0.0)

        return hook

    with Hooks() as hooks:
        for unit in units:
            if unit.name in keep:
                hooks.forward(mask_point(unit), hook_for(keep[unit.name]))
        yield
