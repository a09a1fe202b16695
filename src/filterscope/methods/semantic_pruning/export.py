"""A network pruned for one class, made physically smaller (own surgery, no retraining).

:func:`export_pruned` returns a new model (the caller's is deep-copied, never changed) in which
every unit computes only its kept filters: its conv keeps the kept output channels (and its
BatchNorm the same channels). Where the unit's output goes on:

* **compact**: when the unit feeds exactly one other unit, which reads nothing else and all of
  whose input channels are this unit's output (a plain chain such as ``conv1 → bn1 → relu →
  conv2`` in a ResNet block, or consecutive VGG convs through pooling), the consumer's conv
  drops the matching input channels and the output stays narrow;
* **scattered**: otherwise (a residual addition, a concatenation, the classifier), the kept
  channels are written back into a zero tensor of the full width, which is what the masked
  network computes — a pruned filter contributes exactly zero after its BatchNorm.

A unit whose filters are all pruned is replaced by a module that emits zeros of its output
shape. Grouped and depthwise convs are not exported with pruned filters (their input and output
channels are tied); exclude them from pruning. The equality with the masked network is checked
on a probe input before the model is returned (:func:`check_export`), and the tests check it on
real models.

:func:`compare_costs` measures FLOPs (``torch.utils.flop_counter``), parameters and batch-1
latency of the full and the exported network side by side.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .masks import mask_hooks
from .selection import PruningMask
from ...core.flops import count_flops_reference
from ...core.errors import UserInputError
from ...core.units import Unit, find_units, probe_input, probe_mode

__all__ = ["ExportCosts", "check_export", "compare_costs", "export_pruned"]


class _Scatter(nn.Module):
    """Writes a narrow ``(N, k, H, W)`` tensor into channels ``kept`` of a zero ``(N, width, H, W)`` tensor."""

    def __init__(self, kept: Sequence[int], width: int):
        super().__init__()
        self.register_buffer("kept", torch.as_tensor(np.asarray(kept), dtype=torch.long), persistent=False)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((x.shape[0], self.width, *x.shape[2:]))
        return out.index_copy_(1, self.kept, x)


class _Zeros(nn.Module):
    """Zeros of a conv's output shape: a unit whose every filter was pruned."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        if isinstance(self.padding, str):
            raise UserInputError("export does not support string padding on a fully pruned conv; exclude that unit.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [
            (x.shape[2 + i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1) // self.stride[i] + 1
            for i in range(2)
        ]
        return x.new_zeros((x.shape[0], self.out_channels, *size))


class _Identity(nn.Identity):
    """Stands in for the BatchNorm of a unit replaced by :class:`_Zeros` (zeros stay zeros)."""


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _smaller_conv(conv: nn.Conv2d, out_index: np.ndarray, in_index: np.ndarray | None) -> nn.Conv2d:
    weight = conv.weight.detach()[torch.as_tensor(out_index, dtype=torch.long)]
    if in_index is not None:
        weight = weight[:, torch.as_tensor(in_index, dtype=torch.long)]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    1, conv.bias is not None, conv.padding_mode, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach()[torch.as_tensor(out_index, dtype=torch.long)])
    return new


def _smaller_bn(bn: nn.BatchNorm2d, index: np.ndarray) -> nn.BatchNorm2d:
    select = torch.as_tensor(index, dtype=torch.long)
    new = nn.BatchNorm2d(len(index), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                         device=bn.weight.device if bn.affine else None)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight.detach()[select])
            new.bias.copy_(bn.bias.detach()[select])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[select])
            new.running_var.copy_(bn.running_var[select])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _compact_consumer(unit: Unit, units: dict[str, Unit], producers: dict[str, list[str]]) -> str | None:
    """The one unit that alone reads all of ``unit``'s output and nothing else, if any."""
    if len(unit.consumers) != 1:
        return None
    consumer = units.get(unit.consumers[0])
    if consumer is None or consumer.groups != 1 or producers.get(consumer.name) != [unit.name]:
        return None
    if unit.consumer_channels.get(consumer.name) != (0, unit.out_channels) or consumer.in_channels != unit.out_channels:
        return None
    return consumer.name


def export_pruned(
    model: nn.Module,
    mask: PruningMask,
    input_size: tuple[int, int, int] = (3, 32, 32),
    *,
    check: bool = True,
) -> nn.Module:
    """A physically smaller copy of ``model`` with ``mask``'s filters removed.

    Args:
        model: The trained model (not changed).
        mask: From :func:`filterscope.methods.semantic_pruning.selection.select_pruned` on this model.
        input_size: ``(channels, height, width)`` of one input.
        check: Verify on a probe input that the exported model gives the masked model's outputs.

    Returns:
        A new model in eval mode.

    Raises:
        UserInputError: The mask does not fit the model, or it prunes a grouped conv.
        RuntimeError: ``check`` found the outputs differ (a layout the surgery does not cover).
    """
    units = find_units(model, input_size)
    by_name = {unit.name: unit for unit in units}
    for name, pruned in mask.pruned.items():
        if name not in by_name or by_name[name].out_channels != pruned.size:
            raise UserInputError(f"the mask does not fit this model at unit {name!r}; select it on this model's responses.")
        if by_name[name].groups != 1 and pruned.any():
            raise UserInputError(f"unit {name!r} is a grouped conv; exclude it from pruning to export the network.")
    producers: dict[str, list[str]] = {}
    for unit in units:
        for consumer in unit.consumers:
            producers.setdefault(consumer, []).append(unit.name)

    exported = copy.deepcopy(model).eval()
    new_units = {unit.name: unit for unit in find_units(exported, input_size)}
    kept_out = {name: np.flatnonzero(~mask.pruned.get(name, np.zeros(by_name[name].out_channels, bool))) for name in by_name}
    kept_in: dict[str, np.ndarray] = {}  # consumer -> its input channels still present
    compact = {}
    for unit in units:
        consumer = _compact_consumer(unit, by_name, producers)
        if consumer is not None and len(kept_out[unit.name]) > 0 and len(kept_out[unit.name]) < unit.out_channels:
            compact[unit.name] = consumer
            kept_in[consumer] = kept_out[unit.name]

    for unit in units:
        name = unit.name
        new_unit = new_units[name]
        out_index, in_index = kept_out[name], kept_in.get(name)
        if len(out_index) == unit.out_channels and in_index is None:
            continue
        if len(out_index) == 0:
            _set_module(exported, name, _Zeros(new_unit.conv))
            if unit.bn is not None:
                _set_module(exported, unit.bn_name, _Identity())
            continue
        conv = _smaller_conv(new_unit.conv, out_index, in_index)
        narrow = len(out_index) < unit.out_channels
        scatter = narrow and name not in compact
        if unit.bn is None:
            _set_module(exported, name, nn.Sequential(conv, _Scatter(out_index, unit.out_channels)) if scatter else conv)
        else:
            _set_module(exported, name, conv)
            if narrow:
                bn = _smaller_bn(new_unit.bn, out_index)
                _set_module(exported, unit.bn_name, nn.Sequential(bn, _Scatter(out_index, unit.out_channels)) if scatter else bn)
    exported.eval()
    if check:
        check_export(model, exported, mask, input_size)
    return exported


def check_export(model: nn.Module, exported: nn.Module, mask: PruningMask, input_size: tuple[int, int, int] = (3, 32, 32),
                 images: torch.Tensor | None = None, atol: float = 1e-4) -> float:
    """Largest absolute difference between the exported and the masked model's outputs.

    Raises:
        RuntimeError: The difference exceeds ``atol`` (relative to the output scale).
    """
    units = find_units(model, input_size)
    if images is None:
        images = torch.cat([probe_input(model, input_size) * scale for scale in (1.0, 0.5, 2.0)])
    device = next(model.parameters()).device
    keep = {name: torch.tensor(~pruned, dtype=images.dtype, device=device) for name, pruned in mask.pruned.items()}
    with probe_mode(model), mask_hooks(units, keep):
        masked = model(images)
    with probe_mode(exported):
        small = exported(images)
    difference = float((masked - small).abs().max())
    scale = float(masked.abs().max()) + 1.0
    if difference > atol * scale:
        raise RuntimeError(f"exported network differs from the masked one by {difference:.3g}; please report this model layout.")
    return difference


@dataclass
class ExportCosts:
    """Full vs exported network: FLOPs and parameters for one input, median batch-1 latency."""

    flops_full: int
    flops_exported: int
    params_full: int
    params_exported: int
    latency_full_ms: float
    latency_exported_ms: float
    max_output_difference: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_costs(model: nn.Module, exported: nn.Module, mask: PruningMask, input_size: tuple[int, int, int] = (3, 32, 32),
                  *, repeats: int = 200, images: torch.Tensor | None = None) -> ExportCosts:
    """FLOPs, parameters and batch-1 latency of the full and the exported network, interleaved.

    Latency is the median over ``repeats`` alternating single-image forward passes of each
    network (same input, no gradients, eval mode), after a warm-up.
    """
    difference = check_export(model, exported, mask, input_size, images)
    sample = probe_input(model, input_size)
    times = {"full": [], "exported": []}
    with probe_mode(model), probe_mode(exported):
        for _ in range(10):
            model(sample), exported(sample)
        for _ in range(repeats):
            for key, network in (("full", model), ("exported", exported)):
                start = time.perf_counter()
                network(sample)
                times[key].append(time.perf_counter() - start)
    return ExportCosts(
        flops_full=count_flops_reference(model, input_size), flops_exported=count_flops_reference(exported, input_size),
        params_full=sum(p.numel() for p in model.parameters()), params_exported=sum(p.numel() for p in exported.parameters()),
        latency_full_ms=1000 * statistics.median(times["full"]), latency_exported_ms=1000 * statistics.median(times["exported"]),
        max_output_difference=difference,
    )
