"""Units: each ``nn.Conv2d`` of a model with the BatchNorm and activation that follow it.

A :class:`Unit` is what filterscope gates, counts, captures and prunes. :func:`find_units`
finds them in any ``nn.Module`` without special layers: it records the model's data-flow graph
(:mod:`filterscope.core.dataflow`, with ``torch.fx`` or, for models fx cannot trace, one forward
pass with hooks), then walks that graph to pair each conv with the BatchNorm that alone reads its
output and with the activation that alone reads the BatchNorm's output, and follows the data
flow from each conv to the convs that read it. Both ways of recording take the spatial output
size of every conv from a real forward pass on a probe input
(:mod:`filterscope.core.probing`).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from torch import nn

from .dataflow import Dataflow, Operation, activation_name_of, dataflow_by_fx, dataflow_by_hooks, is_conv_operation
from .errors import UserInputError
from .layer_kinds import ACTIVATION_MODULES, BATCHNORM_MODULES
from .probing import ProbeRunError, check_input_size, probe_failure, probe_input, probe_mode

__all__ = [
    "ACTIVATION_MODULES",
    "BATCHNORM_MODULES",
    "Unit",
    "describe_units",
    "find_units",
    "probe_input",
    "probe_mode",
]

_METHODS = ("auto", "fx", "hooks")


@dataclass(eq=False)
class Unit:
    """One convolution of a model, with the BatchNorm and activation applied right after it.

    Attributes:
        name: Qualified name of the conv module in the model, e.g. ``"layer1.0.conv1"``.
        conv: The ``nn.Conv2d`` module itself (the caller's module, not a copy).
        bn: The BatchNorm2d that alone reads the conv's output, if any.
        activation: The activation module (``nn.ReLU`` etc.) that alone reads the BatchNorm's
            output (or the conv's, when there is no BatchNorm); ``None`` when the activation is
            a function call such as ``F.relu`` or when there is none.
        bn_name: Qualified name of ``bn``.
        activation_name: Qualified name of ``activation``; for a functional activation a
            marker such as ``"<functional relu>"`` (with ``activation`` left ``None``).
        in_channels: Input channels of the conv.
        out_channels: Output channels (filters) of the conv.
        groups: The conv's ``groups``.
        output_size: Spatial ``(height, width)`` of the conv output for the input size given
            to :func:`find_units`; ``None`` only for units built by hand.
        consumers: Names of the units whose conv reads this unit's output, directly or through
            element-wise operations, pooling, additions, concatenations, BatchNorm,
            activations, indexing and the like, in execution order.
        gateable: Whether the unit's filters can be switched off one by one by a gate; False
            for depthwise or grouped convs and for convs without a following BatchNorm2d.
        reason_not_gateable: Why ``gateable`` is False, as a short phrase; ``None`` otherwise.
        index: Position of the conv in execution order.
        consumer_channels: For each consumer, the half-open slice ``(start, stop)`` of the
            consumer's input channels that carry this unit's output channels (after a
            concatenation they sit at an offset); ``None`` when the channel layout could not
            be followed (a reshape, a channel shuffle, a reduction over channels).
    """

    name: str
    conv: nn.Conv2d = field(repr=False)
    bn: nn.BatchNorm2d | None = field(repr=False)
    activation: nn.Module | None = field(repr=False)
    bn_name: str | None
    activation_name: str | None
    in_channels: int
    out_channels: int
    groups: int
    output_size: tuple[int, int] | None
    consumers: list[str]
    gateable: bool
    reason_not_gateable: str | None
    index: int
    consumer_channels: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    @property
    def output_module(self) -> nn.Module:
        """The last of conv, BatchNorm and activation module present: where post-activation outputs are read."""
        if self.activation is not None:
            return self.activation
        if self.bn is not None:
            return self.bn
        return self.conv


# --------------------------------------------------------------------------------------
# From the data-flow graph to units
# --------------------------------------------------------------------------------------


def _units_from_dataflow(dataflow: Dataflow) -> list[Unit]:
    """Pair every conv with its BatchNorm and activation and follow its output to the next convs."""
    ops, shapes = dataflow.ops, dataflow.shapes
    users: dict[Hashable, list[Operation]] = defaultdict(list)
    for op in ops:
        for value in dict.fromkeys(op.inputs):  # an op reading a value twice is one user
            users[value].append(op)

    def single_user(value: Hashable) -> Operation | None:
        value_users = users.get(value, [])
        return value_users[0] if len(value_users) == 1 else None

    # The first call of each conv module defines its unit (a conv called twice is rare).
    first_calls: dict[int, Operation] = {}
    for op in ops:
        if is_conv_operation(op) and id(op.module) not in first_calls:
            first_calls[id(op.module)] = op

    units: list[Unit] = []
    for index, op in enumerate(first_calls.values()):
        conv: nn.Conv2d = op.module  # type: ignore[assignment]
        output = op.outputs[0]
        bn = activation = bn_name = activation_name = None

        follower = single_user(output)
        if follower is not None and follower.kind == "module" and isinstance(follower.module, BATCHNORM_MODULES):
            bn, bn_name = follower.module, follower.name
            follower = single_user(follower.outputs[0])
        if follower is not None:
            activation_name = activation_name_of(follower)
            if activation_name is not None and follower.kind == "module":
                activation = follower.module

        reasons = []
        if conv.groups > 1:
            kind = "depthwise" if conv.groups == conv.in_channels == conv.out_channels else "grouped"
            reasons.append(f"{kind} convolution (groups={conv.groups})")

        shape = shapes.get(output)
        units.append(
            Unit(
                name=op.name,
                conv=conv,
                bn=bn,
                activation=activation,
                bn_name=bn_name,
                activation_name=activation_name,
                in_channels=conv.in_channels,
                out_channels=conv.out_channels,
                groups=conv.groups,
                output_size=(shape[-2], shape[-1]) if shape is not None and len(shape) >= 2 else None,
                consumers=[],
                gateable=not reasons,
                reason_not_gateable="; ".join(reasons) or None,
                index=index,
            )
        )

    unit_index = {unit.name: unit.index for unit in units}
    for unit, op in zip(units, first_calls.values()):
        consumer_channels = _follow_to_convs(op.outputs[0], unit.out_channels, users, shapes)
        ordered = sorted(consumer_channels, key=lambda name: unit_index.get(name, len(units)))
        unit.consumers = ordered
        unit.consumer_channels = {name: consumer_channels[name] for name in ordered}
    return units


def _follow_to_convs(
    start: Hashable,
    out_channels: int,
    users: dict[Hashable, list[Operation]],
    shapes: dict[Hashable, tuple[int, ...]],
) -> dict[str, tuple[int, int] | None]:
    """Walk the data flow from a conv output to the convs that read it.

    Along the way the channel offset of the conv's channels is tracked: unchanged through
    operations that keep the channel count (element-wise, pooling, BatchNorm, additions),
    shifted by a concatenation along channels, and lost (None) through anything else.

    Returns:
        Consumer conv name -> ``(start, stop)`` of its input channels holding the conv's
        output, or None where the layout was lost.
    """
    found: dict[str, tuple[int, int] | None] = {}
    seen: set[tuple[Hashable, int | None]] = set()
    stack: list[tuple[Hashable, int | None]] = [(start, 0)]
    while stack:
        value, offset = stack.pop()
        if (value, offset) in seen:
            continue
        seen.add((value, offset))
        for op in users.get(value, []):
            if is_conv_operation(op):
                channel_slice = None if offset is None else (offset, offset + out_channels)
                if op.name not in found or found[op.name] is None:
                    found[op.name] = channel_slice
                continue
            for output in op.outputs:
                stack.append((output, _offset_after(op, value, offset, output, shapes)))
    return found


def _offset_after(
    op: Operation,
    value: Hashable,
    offset: int | None,
    output: Hashable,
    shapes: dict[Hashable, tuple[int, ...]],
) -> int | None:
    """Channel offset of ``value``'s channels inside ``output`` of ``op``, or None if unknown."""
    if offset is None:
        return None
    input_shape, output_shape = shapes.get(value), shapes.get(output)
    if input_shape is None or output_shape is None or len(input_shape) < 2 or len(output_shape) < 2:
        return None
    if op.cat_inputs is not None and op.cat_dim is not None:
        dim = op.cat_dim % len(output_shape)
        if dim != 1:
            return offset if output_shape[1] == input_shape[1] else None
        position = op.cat_inputs.index(value)
        preceding = [shapes.get(earlier) for earlier in op.cat_inputs[:position]]
        if any(shape is None or len(shape) < 2 for shape in preceding):
            return None
        return offset + sum(shape[1] for shape in preceding)  # type: ignore[index]
    if len(output_shape) == len(input_shape) and output_shape[1] == input_shape[1]:
        return offset
    return None


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def find_units(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 32, 32),
    *,
    method: str = "auto",
) -> list[Unit]:
    """Find every ``nn.Conv2d`` of a model, in execution order, with its BatchNorm and activation.

    The model is run once on a random batch-1 input in eval mode without gradients; its
    parameters, buffers, hooks and training flags are left exactly as they were.

    Args:
        model: Any ``nn.Module`` built with ``nn.Conv2d`` layers.
        input_size: ``(channels, height, width)`` of one input, used for the probe forward
            pass that measures every conv's output size.
        method: ``"fx"`` traces the model with ``torch.fx``; ``"hooks"`` records one forward
            pass instead (works with data-dependent control flow, but sees only the branches
            that input takes); ``"auto"`` tries fx and falls back to hooks with a warning.

    Returns:
        The units, in execution order (``unit.index`` is the position).

    Raises:
        UserInputError: The model has no ``nn.Conv2d``, does not run on ``input_size``, cannot
            be traced with ``method="fx"``, or ``method`` is unknown.
    """
    if method not in _METHODS:
        raise UserInputError(f"method must be one of {', '.join(_METHODS)}, got {method!r}; pass method='auto'.")
    input_size = check_input_size(input_size)
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        raise UserInputError(
            f"{type(model).__name__} has no nn.Conv2d layers; filterscope analyses convolutional networks, "
            "so pass a model built with nn.Conv2d layers."
        )

    example_input = probe_input(model, input_size)
    with probe_mode(model):
        dataflow = None
        fallback_reason = None
        if method in ("auto", "fx"):
            try:
                dataflow = dataflow_by_fx(model, example_input)
            except ProbeRunError as run_error:
                # The traced graph did not run: either the input size is wrong (then the
                # model fails by itself too, reported below) or the trace is unfaithful.
                fallback_reason = f"its traced graph failed to run: {run_error.error}"
            except Exception as trace_error:  # noqa: BLE001 - fx raises many error types
                fallback_reason = f"{type(trace_error).__name__}: {trace_error}"
                if method == "fx":
                    raise UserInputError(
                        f"torch.fx cannot trace {type(model).__name__} ({_first_line(fallback_reason)}); "
                        "pass method='hooks' (or 'auto') to find units from one forward pass instead."
                    ) from trace_error
        if dataflow is None:
            try:
                dataflow = dataflow_by_hooks(model, example_input)
            except ProbeRunError as run_error:
                raise probe_failure(model, input_size, run_error.error) from run_error.error
            if method == "fx":  # the model runs, but not its fx graph
                raise UserInputError(
                    f"torch.fx traced {type(model).__name__} but {_first_line(fallback_reason)}; "
                    "pass method='hooks' (or 'auto') to find units from one forward pass instead."
                )
            if fallback_reason is not None:
                warnings.warn(
                    f"find_units: torch.fx could not trace {type(model).__name__} ({_first_line(fallback_reason)}); "
                    "units were found from one forward pass with hooks instead, so only the branches taken "
                    "for that input are seen.",
                    stacklevel=2,
                )
    return _units_from_dataflow(dataflow)


def _first_line(text: str | None, limit: int = 200) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:limit] if lines else "unknown reason"


def describe_units(units: Iterable[Unit]) -> str:
    """Format units as a small text table (index, name, channels, output size, gateable).

    Args:
        units: Units from :func:`find_units`.

    Returns:
        The table, one line per unit under a header line, without a trailing newline.
    """
    rows = [("#", "name", "in", "out", "HxW", "gateable")]
    for unit in units:
        size = f"{unit.output_size[0]}x{unit.output_size[1]}" if unit.output_size else "?"
        gateable = "yes" if unit.gateable else f"no ({unit.reason_not_gateable})"
        rows.append((str(unit.index), unit.name, str(unit.in_channels), str(unit.out_channels), size, gateable))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    right_aligned = {0, 2, 3, 4}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
