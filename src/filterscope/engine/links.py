"""Which conv hands its output straight to the next conv: where only the computed channels need to travel.

A producer conv P and a consumer conv C are *linked* when P's output reaches C through nothing but P's
own BatchNorm (folded into P) and element-wise activations with act(0) = 0, and no other operation
reads any of those tensors. Then P can hand over only the channels it computed (a compact tensor) and
C reads them with the matching columns of its weight: the skipped channels are zeros C need not read.
Anything else (a residual addition, a concatenation, pooling, a second reader) gets the full-width
tensor, with zeros in the channels that were not computed.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..core.dataflow import Dataflow, activation_name_of, dataflow_by_fx, dataflow_by_hooks, is_conv_operation
from ..core.layer_kinds import BATCHNORM_MODULES
from ..core.probing import probe_input, probe_mode
from ..core.units import Unit


def record_dataflow(network: nn.Module, input_shape: tuple[int, int, int]) -> Dataflow:
    """The data-flow graph of ``network`` (fx, or one recorded forward pass when it cannot be traced)."""
    example = probe_input(network, input_shape)
    with probe_mode(network):
        try:
            return dataflow_by_fx(network, example)
        except Exception:  # noqa: BLE001 - fx fails in many ways; find_units already warned about it
            return dataflow_by_hooks(network, example)


def direct_links(dataflow: Dataflow, units: list[Unit]) -> dict[str, str]:
    """consumer conv name → producer conv name, for every linked pair (see the module docstring)."""
    by_name = {unit.name: unit for unit in units}
    readers: dict = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    for op in dataflow.ops:
        for key in op.inputs:
            readers[key].append(op)
        if is_conv_operation(op):
            calls[op.name] += 1
    links: dict[str, str] = {}
    for op in dataflow.ops:
        producer = by_name.get(op.name) if is_conv_operation(op) else None
        if producer is None or calls[op.name] != 1 or len(op.outputs) != 1:
            continue
        consumer = _follow(op.outputs[0], producer, readers)
        if consumer is not None and calls[consumer.name] == 1 and consumer.name in by_name \
                and by_name[consumer.name].groups == 1 and consumer.name not in links:
            links[consumer.name] = producer.name
    return links


def _follow(value, producer: Unit, readers) -> object | None:
    """The conv operation that alone reads ``value`` through the producer's BN and activations, or None."""
    after_batchnorm = False
    while True:
        ops = readers.get(value, [])
        if len(ops) != 1 or len(ops[0].inputs) != 1 or len(ops[0].outputs) != 1:
            return None
        op = ops[0]
        if is_conv_operation(op):
            return op
        is_own_batchnorm = (op.kind == "module" and isinstance(op.module, BATCHNORM_MODULES)
                            and op.name == producer.bn_name and not after_batchnorm)
        if not is_own_batchnorm and activation_name_of(op) is None:
            return None
        after_batchnorm = True
        value = op.outputs[0]


def conv_output_size(geometry: dict, height: int, width: int) -> tuple[int, int]:
    """Spatial size of a conv's output for an input of ``height`` × ``width``; ``geometry`` holds the
    conv's kernel_size, stride, padding and dilation."""
    padding = geometry["padding"]
    if padding == "same":
        return height, width
    paddings = (0, 0) if padding == "valid" else padding
    sizes = []
    for size, kernel, stride, pad, dilation in zip((height, width), geometry["kernel_size"], geometry["stride"],
                                                    paddings, geometry["dilation"]):
        sizes.append((size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1)
    return sizes[0], sizes[1]


def zeros_like_output(geometry: dict, unit_input: torch.Tensor, channels: int) -> torch.Tensor:
    """A zero tensor of ``channels`` channels shaped like the conv's output for ``unit_input``."""
    height, width = conv_output_size(geometry, unit_input.shape[2], unit_input.shape[3])
    return unit_input.new_zeros(unit_input.shape[0], channels, height, width)
