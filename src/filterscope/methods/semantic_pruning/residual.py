"""Residual pruning's measurement: per mask, each filter's summed |response| over its target class's images.

A filter's response here is its post-activation output when the unit has its own activation
(zero after a ReLU means never active) and its raw conv output otherwise (zero only when every
input it reads is zero): a BatchNorm output is never exactly zero, since BatchNorm adds its shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core.unit_hooks import register_unit_hooks
from ...core.hooks import Hooks
from ...core.units import Unit

__all__ = ["ResidualAccumulator", "residual_hooks"]


class ResidualAccumulator:
    """Per mask, the sum over its target class's images of each filter's |response|.

    Rows of a repeated batch that belong to mask ``m``'s target class are picked out once per
    batch, so only about one row in ``classes`` is reduced.
    """

    def __init__(self, units: Sequence[Unit], num_masks: int, device: torch.device):
        self.sums = {unit.name: torch.zeros((num_masks, unit.out_channels), dtype=torch.float64, device=device) for unit in units}
        self.rows: torch.Tensor | None = None  # indices into the repeated batch
        self.row_masks: torch.Tensor | None = None  # which mask (global index) each row belongs to

    def add(self, unit: Unit, activation: torch.Tensor) -> None:
        if self.rows is None or self.rows.numel() == 0:
            return
        picked = activation.detach().flatten(2).index_select(0, self.rows)
        self.sums[unit.name].index_add_(0, self.row_masks, picked.abs().sum(dim=2, dtype=torch.float64))


def residual_hooks(units: Sequence[Unit], accumulator: ResidualAccumulator, hooks: Hooks) -> None:
    """Feed each unit's response (see the module docstring) to ``accumulator``, through ``hooks``."""
    with_activation = [unit for unit in units if unit.activation is not None]
    without = [unit for unit in units if unit.activation is None]
    if with_activation:
        register_unit_hooks(hooks, with_activation, "post", accumulator.add)
    if without:
        register_unit_hooks(hooks, without, "conv", accumulator.add)
