"""Static FLOP and parameter counts of a CNN, per unit and in total.

FLOPs are counted the way :class:`torch.utils.flop_counter.FlopCounterMode` counts them,
which is the reference the tests check against:

* a convolution costs ``2 * C_out * (C_in / groups) * k_h * k_w * H_out * W_out``
  (two FLOPs per multiply-add; bias additions are not counted);
* a linear layer costs ``2 * rows * in_features * out_features``, where ``rows`` is the
  number of input vectors (1 for a batch-1 classifier head);
* BatchNorm, activations, pooling and additions are not counted.

Conv costs come from the units' shapes and output sizes (:func:`filterscope.find_units`);
linear costs from the layer shapes and the number of rows each call receives. Only
``nn.Conv2d`` and ``nn.Linear`` modules are counted, once per unit (a conv module called
twice in one forward pass is counted once); other matrix products (``torch.matmul`` in
forward, ``nn.Conv1d``, transposed convs) are not.

:func:`unit_flops` also prices a conv that computes only some of its input and output
channels, which is what a gated (decoupled) unit costs for one input.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn

from .errors import UserInputError
from .hooks import Hooks
from .probing import probe_input, probe_mode
from .units import Unit, find_units

__all__ = ["UnitCost", "CostReport", "count_costs", "count_flops_reference", "unit_flops"]

# Conv-like modules whose FLOPs FlopCounterMode counts but this static count does not.
_UNCOUNTED_CONVOLUTIONS = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class UnitCost:
    """Cost of one unit.

    Attributes:
        name: The unit's name (its conv's qualified name).
        flops: FLOPs of the conv for one input (BatchNorm is not counted, as in FlopCounterMode).
        params: Parameters of the conv and its BatchNorm (running statistics are buffers, not counted).
    """

    name: str
    flops: int
    params: int


@dataclass
class CostReport:
    """FLOPs and parameters of a model for one input.

    Attributes:
        units: One :class:`UnitCost` per unit, in execution order.
        total_flops: ``conv_flops + linear_flops``.
        total_params: Every parameter of the model (shared parameters once).
        conv_flops: FLOPs of all units' convs.
        linear_flops: FLOPs of all ``nn.Linear`` calls.
    """

    units: list[UnitCost]
    total_flops: int
    total_params: int
    conv_flops: int
    linear_flops: int

    def to_dict(self) -> dict:
        """Plain JSON-ready dictionary (``units`` as a list of ``{name, flops, params}``)."""
        return asdict(self)


def _kernel_area(conv: nn.Conv2d) -> int:
    return int(math.prod(conv.kernel_size))


def _conv_flops(unit: Unit) -> int:
    """Exact integer FLOPs of a unit's conv with all channels active."""
    if unit.output_size is None:
        raise UserInputError(
            f"unit {unit.name!r} has no output_size; get units from find_units(model, input_size) to count FLOPs."
        )
    conv = unit.conv
    height, width = unit.output_size
    return 2 * conv.out_channels * (conv.in_channels // conv.groups) * _kernel_area(conv) * height * width


def unit_flops(unit: Unit, active_in: float | int | None = None, active_out: float | int | None = None) -> float:
    """FLOPs of a unit's conv when only some input and output channels are computed.

    A gated conv skips the filters its gate switched off (``active_out``) and reads only
    the input channels that the previous gates left on (``active_in``). The cost scales
    with both: ``2 * active_out * (active_in / groups) * k_h * k_w * H_out * W_out``. For a
    grouped or depthwise conv this assumes the active input channels are spread evenly over
    the groups. Counts may be fractional (an average over inputs).

    Args:
        unit: A unit from :func:`filterscope.find_units` (its ``output_size`` is needed).
        active_in: Active input channels, ``0 <= active_in <= in_channels``; ``None`` for all.
        active_out: Active output channels, ``0 <= active_out <= out_channels``; ``None`` for all.

    Returns:
        The FLOPs; equal to the dense count when both are ``None``.

    Raises:
        UserInputError: A count outside its range, or a unit without ``output_size``.
    """
    dense = _conv_flops(unit)
    fraction = 1.0
    for label, active, total in (("active_in", active_in, unit.in_channels), ("active_out", active_out, unit.out_channels)):
        if active is None:
            continue
        if not 0 <= active <= total:
            raise UserInputError(f"{label}={active} is outside [0, {total}] for unit {unit.name!r}; pass a channel count in range.")
        fraction *= active / total
    return dense * fraction


def _linear_flops(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """FLOPs of every ``nn.Linear`` call in one batch-1 forward pass."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        return 0
    total = 0

    def count(module: nn.Linear, inputs: tuple) -> None:
        nonlocal total
        rows = inputs[0].numel() // module.in_features
        total += 2 * rows * module.in_features * module.out_features

    with Hooks() as hooks:
        for module in linears:
            hooks.forward_pre(module, count)
        with probe_mode(model):
            model(probe_input(model, input_size))
    return total


def count_costs(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 32, 32),
    units: Sequence[Unit] | None = None,
) -> CostReport:
    """Count FLOPs and parameters of a CNN for one input of ``input_size``.

    The model is not changed: it runs once (twice if ``units`` is not given) on a random
    batch-1 input in eval mode without gradients, and its training flags are restored.

    Args:
        model: Any CNN built from ``nn.Conv2d`` (and ``nn.Linear``) modules.
        input_size: ``(channels, height, width)`` of one input.
        units: Units of this model from :func:`filterscope.find_units` with the same
            ``input_size``; found here when ``None``.

    Returns:
        The per-unit and total costs.

    Raises:
        UserInputError: As :func:`filterscope.find_units`.
    """
    if units is None:
        units = find_units(model, input_size)
    uncounted = sorted({type(module).__name__ for module in model.modules() if isinstance(module, _UNCOUNTED_CONVOLUTIONS)})
    if uncounted:
        warnings.warn(
            f"count_costs counts nn.Conv2d and nn.Linear only; the model's {', '.join(uncounted)} layers are left out.",
            stacklevel=2,
        )
    unit_costs = []
    for unit in units:
        parameters = [*unit.conv.parameters(), *(unit.bn.parameters() if unit.bn is not None else [])]
        unit_costs.append(UnitCost(unit.name, _conv_flops(unit), sum(parameter.numel() for parameter in parameters)))
    conv_flops = sum(cost.flops for cost in unit_costs)
    linear_flops = _linear_flops(model, input_size)
    return CostReport(
        units=unit_costs,
        total_flops=conv_flops + linear_flops,
        total_params=sum(parameter.numel() for parameter in model.parameters()),
        conv_flops=conv_flops,
        linear_flops=linear_flops,
    )


def count_flops_reference(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Total FLOPs of one batch-1 forward pass measured by ``torch.utils.flop_counter.FlopCounterMode``.

    The reference that :func:`count_costs` is tested against. Runs in eval mode without
    gradients and restores the model's training flags.

    Args:
        model: Any model.
        input_size: ``(channels, height, width)`` of one input.

    Returns:
        The FLOPs FlopCounterMode counted (convolutions and matrix products).
    """
    from torch.utils.flop_counter import FlopCounterMode

    example_input = probe_input(model, input_size)
    with probe_mode(model):
        with FlopCounterMode(display=False) as counter:
            model(example_input)
    return int(counter.get_total_flops())
