"""A gate reduced to what evaluation needs: which decided filters open, from the pooled unit input.

Evaluation computes g = W2 · ReLU(W1 · (s − μ)/σ + b1) + b2 with s = GAP(X) (Li et al., 2020, Eq. 4,
with filterscope's standardisation of s) and opens filter j where g_j > 0. Everything that does not
depend on X is folded at build time: the standardisation into W1' = W1 / σ and b1' = b1 − W1'·μ, and
only the rows of W2 of the filters whose gate is decided at run time are kept. When the unit reads
only some input channels (the others are known zeros), only those columns of W1' are used.

The two matrix products are a few hundred multiply-adds, so the gate's cost is its calls. Two kernels
(:data:`GATE_KERNELS`):

- ``"compiled"``: the whole gate in one C call (:mod:`.compiled_gate`), at batch 1 on float32 inputs whose
  pixels sit at one stride (NCHW or channels-last). Inside the running ResNet-20 executor (one thread,
  timed around the call, ``benchmarks/engine/gate_cost.py``): 10–15 µs per gate, against 19–28 µs in
  torch. Batches go to torch: its sum runs on every thread.
- ``"torch"``: the spatial sum, two ``addmm`` (the 1/(H·W) of the average pool folded into W1', b1' and
  b2 added inside them) and one in-place ReLU. Measured inside the running executor: 28 µs per gate,
  against 33 µs when the products ran in NumPy on the pooled input, though NumPy was the faster one timed
  alone in a loop (7 against 15 µs): a gate's calls run with caches the convolutions have just filled.
  NumPy's BLAS also starts threads of its own, which fought torch's at batch 64 on two threads (a NumPy
  spatial sum made one unit 1.6 → 8 ms), so nothing here calls NumPy's products.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from torch import nn

from . import compiled_gate

#: The ways a gate can be evaluated: the single list of names ``compile_decoupled(gates=...)`` accepts
#: besides "auto" (compiled where :func:`.compiled_gate.gate_function` builds, torch otherwise).
GATE_KERNELS = ("compiled", "torch")


class GateProgram:
    """The evaluation gate of one unit for the filters ``decided`` (indices into the unit's filters).

    Attributes:
        decided: filters whose gate is evaluated per input, a sorted long tensor.
        kernel: one of :data:`GATE_KERNELS`.
        squeeze_weight_t, squeeze_bias: W1' transposed, (C, hidden), and b1' (standardisation folded in).
        expand_weight_t, expand_bias: the rows of W2 of the decided filters transposed, (hidden, d), and theirs of b2.
    """

    def __init__(self, controller: nn.Module, decided: torch.Tensor, kernel: str = "torch"):
        with torch.no_grad():
            weight = controller.squeeze.weight.detach().clone()
            bias = controller.squeeze.bias.detach().clone()
            standardize = controller.standardize
            if isinstance(standardize, nn.BatchNorm1d):
                inverse_std = torch.rsqrt(standardize.running_var + standardize.eps)
                weight = weight * inverse_std
                bias = bias - weight @ standardize.running_mean
            self.squeeze_weight_t = weight.t().contiguous()  # (C, hidden): pooled @ this
            self.squeeze_bias = bias.contiguous()
            self.decided = decided
            self.expand_weight_t = controller.expand.weight.detach()[decided].t().contiguous()  # (hidden, d)
            self.expand_bias = controller.expand.bias.detach()[decided].contiguous()
        self.kernel = kernel
        self._columns: dict[tuple, torch.Tensor] = {}  # (input key, H·W) → W1' / (H·W) of the channels read
        self._function = None  # the compiled kernel, looked up on first use

    def __getstate__(self) -> dict:
        # A copy rebuilds its caches: the compiled kernel reads raw pointers, and a ctypes function cannot be
        # pickled (a copy loaded where no compiler works falls back to torch).
        return {**self.__dict__, "_columns": {}, "_function": None}

    def opened(self, unit_input: torch.Tensor, input_key: bytes | None, input_index: torch.Tensor | None) -> np.ndarray:
        """Which decided filters open, a (B, d) boolean array, from the unit input (compact when ``input_index`` is given)."""
        area = unit_input.shape[2] * unit_input.shape[3]
        squeeze = self._columns.get((input_key, area))
        if squeeze is None:
            columns = self.squeeze_weight_t if input_index is None else self.squeeze_weight_t[input_index]
            squeeze = self._columns[(input_key, area)] = (columns / area).contiguous()
        if self.kernel == "compiled" and unit_input.shape[0] == 1 and unit_input.dtype == squeeze.dtype == torch.float32:
            strides = unit_input.stride()
            function = self._function or self._bind()
            if function is not None and strides[2] == unit_input.shape[3] * strides[3]:  # H×W: one run, one stride
                return self._compiled(function, unit_input, squeeze, area, strides)
        hidden = torch.addmm(self.squeeze_bias, unit_input.sum(dim=(2, 3)), squeeze).relu_()
        return torch.addmm(self.expand_bias, hidden, self.expand_weight_t).numpy() > 0

    def _bind(self):
        self._function = compiled_gate.gate_function()
        if self._function is None:
            self.kernel = "torch"
        return self._function

    def _compiled(self, function, unit_input: torch.Tensor, squeeze: torch.Tensor, area: int, strides) -> np.ndarray:
        decided = self.expand_bias.shape[0]
        opened = ctypes.create_string_buffer(decided)
        function(
            unit_input.data_ptr(), unit_input.shape[1], area, strides[1], strides[3], squeeze.data_ptr(),
            self.squeeze_bias.data_ptr(), squeeze.shape[1], self.expand_weight_t.data_ptr(),
            self.expand_bias.data_ptr(), decided, opened)
        return np.frombuffer(opened, dtype=np.bool_, count=decided)[None]
