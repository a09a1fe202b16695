"""One conv unit as the executor runs it: BatchNorm folded, only the filters the gate opened computed.

Run time, per call (Li et al., 2020, Sec. 3.4: a closed filter need not be computed):

1. the gate (if the unit has filters decided per input) says which decided filters open (g > 0, see
   :mod:`.gate_program`); the output filters are the fixed ones (energetic over the calibration data)
   plus the opened ones; silent filters were removed at build time;
2. the conv runs with only those output filters, reading only the input channels its producer
   computed when the two are linked (see :mod:`.links`), with weights gathered once per
   (output set, input set) and cached;
3. the result goes to a linked consumer as it is (compact) or is scattered into a full-width zero
   tensor for anything else (a residual addition, pooling, the classifier).

With a batch of several inputs whose gates differ, the unit computes the union of their filters and
multiplies each input's closed ones by 0 (or, ``batch_mode="mask"``, every kept filter).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .gate_program import GateProgram
from .kernels import chosen_kernel
from .links import zeros_like_output

STATIC_KEY = b""  # the key of a filter set that never changes at run time
CACHE_LIMIT = 4096  # gathered weight sets kept per unit; paths repeat, so a few dozen are usual


class ChannelLink:
    """What a producer computed in this pass, for its linked consumer: channel indices and their key."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.index: torch.Tensor | None = None


class ExecutedUnit(nn.Module):
    """A conv (+ folded BatchNorm) computing only its open filters; replaces the conv in the network.

    Args:
        conv: the original conv (its geometry is read; its weights are not used).
        weight, bias: the folded weight (N, C/groups, kh, kw) and bias (N,).
        fixed: filters always computed, sorted long tensor (all N for an ungated unit).
        gate: the evaluation gate of the decided filters, or None when nothing is decided per input.
        input_link: the producer's :class:`ChannelLink` when this unit reads a compact input.
        output_link: this unit's :class:`ChannelLink` when it hands its output compact to a consumer.
        batch_mode: ``"union"`` (compute the union of the batch's open filters) or ``"mask"`` (compute
            every kept filter and multiply by the gates).
        kernels: names in :data:`.kernels.KERNELS` to choose from per shape by timing; ``("nchw",)`` is
            PyTorch's default path with no timing.
    """

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, fixed: torch.Tensor,
                 gate: GateProgram | None = None, input_link: ChannelLink | None = None,
                 output_link: ChannelLink | None = None, batch_mode: str = "union", kernels: tuple[str, ...] = ("nchw",)):
        super().__init__()
        self.geometry = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        self.shape_geometry = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                                   dilation=conv.dilation)
        self.weight, self.bias = weight, bias
        self.out_channels = weight.shape[0]
        self.fixed = fixed
        self.gate = gate
        self.input_link = input_link
        self.output_link = output_link
        self.batch_mode = batch_mode
        self.kernels = tuple(kernels)
        self.kernel_choices: dict[str, int] = {}  # kernel name → (filter set, input shape) pairs it ran
        self._runs: dict[tuple, object] = {}
        self._selections: dict[bytes, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._weights: dict[tuple[bytes | None, bytes | None], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, unit_input: torch.Tensor) -> torch.Tensor:
        link = self.input_link
        input_key, input_index = (link.key, link.index) if link is not None else (None, None)
        if self.gate is None:
            output_key, output_index, multiplier = STATIC_KEY, self.fixed, None
        else:
            opened = self.gate.opened(unit_input, input_key, input_index)
            output_key, output_index, multiplier = self._select(opened)
        weight, bias = self._gathered(output_key, output_index, input_key, input_index)
        output = self._convolve(unit_input, weight, bias, (output_key, input_key))
        if multiplier is not None:
            output = output * multiplier[:, :, None, None]
        if self.output_link is not None:
            self.output_link.key, self.output_link.index = output_key, output_index
            return output
        if output_index.numel() == self.out_channels:
            return output  # every filter computed, in order
        full = zeros_like_output(self.shape_geometry, unit_input, self.out_channels)
        return full.index_copy_(1, output_index, output)

    def _select(self, opened: np.ndarray) -> tuple[bytes, torch.Tensor, torch.Tensor | None]:
        """The filters to compute for the batch's gates ``opened`` (a (B, d) boolean array), their key, and
        the per-input multiplier (B, k) of 0/1 when the inputs' gates differ (None when they agree)."""
        union = opened[0] if opened.shape[0] == 1 else opened.any(0)
        if self.batch_mode == "mask":
            union = np.ones_like(union)
        key = union.tobytes()
        selection = self._selections.get(key)
        if selection is None:
            if len(self._selections) >= CACHE_LIMIT:
                self._selections.clear()
            selection = self._selections[key] = self._selection(union)
        output_index, positions, decided_columns = selection
        if opened.shape[0] == 1 and self.batch_mode == "union":
            return key, output_index, None
        if bool((opened == union).all()):
            return key, output_index, None
        multiplier = torch.ones(opened.shape[0], output_index.numel(), dtype=self.weight.dtype)
        multiplier[:, positions] = torch.from_numpy(opened[:, decided_columns].astype(np.float32)).to(self.weight.dtype)
        return key, output_index, multiplier

    def _selection(self, union: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        decided_columns = union.nonzero()[0]
        chosen = torch.cat([self.fixed, self.gate.decided[torch.from_numpy(decided_columns)]])
        output_index, order = chosen.sort()
        positions = order.argsort()[self.fixed.numel():]  # where each chosen decided filter sits
        return output_index, positions, decided_columns

    def _gathered(self, output_key, output_index, input_key, input_index) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self._weights.get((output_key, input_key))
        if entry is None:
            if len(self._weights) >= CACHE_LIMIT:
                self._weights.clear()
            weight = self.weight if output_index.numel() == self.out_channels else self.weight[output_index]
            if input_index is not None:
                weight = weight[:, input_index]
            entry = self._weights[(output_key, input_key)] = (weight.contiguous(), self.bias[output_index].contiguous())
        return entry

    def _convolve(self, unit_input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, weight_key) -> torch.Tensor:
        if weight.shape[0] == 0 or weight.shape[1] == 0:  # nothing computed, or nothing to read: bias only
            output = zeros_like_output(self.shape_geometry, unit_input, weight.shape[0])
            return output + bias[:, None, None]
        if self.kernels == ("nchw",):
            return F.conv2d(unit_input, weight, bias, **self.geometry)
        key = (weight_key, tuple(unit_input.shape))
        run = self._runs.get(key)
        if run is None:
            if len(self._runs) >= CACHE_LIMIT:
                self._runs.clear()
            # One timing per shape (not per filter set) in the process: sets of the same size share the choice.
            name, run = chosen_kernel(self.kernels, unit_input, weight, bias, self.geometry)
            self.kernel_choices[name] = self.kernel_choices.get(name, 0) + 1
            self._runs[key] = run
        return run(unit_input)

    def extra_repr(self) -> str:
        decided = 0 if self.gate is None else self.gate.decided.numel()
        return (f"filters={self.out_channels}, fixed={self.fixed.numel()}, decided={decided}, "
                f"compact_in={self.input_link is not None}, compact_out={self.output_link is not None}")
