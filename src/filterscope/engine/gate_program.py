"""A gate reduced to what evaluation needs: the decided filters' logits from the pooled unit input.

Evaluation computes g = W2 · ReLU(W1 · (s − μ)/σ + b1) + b2 with s = GAP(X) (Li et al., 2020, Eq. 4,
with filterscope's standardisation of s) and opens filter j where g_j > 0. Everything that does not
depend on X is folded at build time: the standardisation into W1' = W1 / σ and b1' = b1 − W1'·μ, and
only the rows of W2 of the filters whose gate is decided at run time are kept. When the unit reads
only some input channels (the others are known zeros), only those columns of W1' are used.

The two matrix products are a few hundred multiply-adds, so the gate's cost is its calls: the spatial sum
and two ``addmm`` (the 1/(H·W) of the average pool folded into W1', b1' and b2 added inside them) and one
in-place ReLU, all in torch. Measured inside the running executor (its convs between the gates, ResNet-20,
batch 1, one thread): 28 µs per gate, against 33 µs when the products ran in NumPy on the pooled input, though
NumPy was the faster one timed alone in a loop (7 against 15 µs): a gate's calls run with caches the
convolutions have just filled. NumPy's BLAS also starts threads of its own, which fought torch's at batch 64 on
two threads (a NumPy spatial sum made one unit 1.6 → 8 ms).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GateProgram:
    """The evaluation gate of one unit for the filters ``decided`` (indices into the unit's filters).

    Attributes:
        decided: filters whose gate is evaluated per input, a sorted long tensor.
        squeeze_weight_t, squeeze_bias: W1' transposed, (C, hidden), and b1' (standardisation folded in).
        expand_weight_t, expand_bias: the rows of W2 of the decided filters transposed, (hidden, d), and theirs of b2.
    """

    def __init__(self, controller: nn.Module, decided: torch.Tensor):
        with torch.no_grad():
            weight = controller.squeeze.weight.detach().clone()
            bias = controller.squeeze.bias.detach().clone()
            standardize = controller.standardize
            if isinstance(standardize, nn.BatchNorm1d):
                inverse_std = torch.rsqrt(standardize.running_var + standardize.eps)
                weight = weight * inverse_std
                bias = bias - weight @ standardize.running_mean
            self.squeeze_weight_t = weight.t().contiguous()  # (C, hidden): pooled @ this
            self.squeeze_bias = bias
            self.decided = decided
            self.expand_weight_t = controller.expand.weight.detach()[decided].t().contiguous()  # (hidden, d)
            self.expand_bias = controller.expand.bias.detach()[decided].clone()
        self._columns: dict[tuple, torch.Tensor] = {}  # (input key, H·W) → W1' / (H·W) of the channels read

    def logits(self, unit_input: torch.Tensor, input_key: bytes | None, input_index: torch.Tensor | None) -> np.ndarray:
        """g of the decided filters, a (B, d) array, from the unit input (compact when ``input_index`` is given)."""
        area = unit_input.shape[2] * unit_input.shape[3]
        squeeze = self._columns.get((input_key, area))
        if squeeze is None:
            columns = self.squeeze_weight_t if input_index is None else self.squeeze_weight_t[input_index]
            squeeze = self._columns[(input_key, area)] = (columns / area).contiguous()
        hidden = torch.addmm(self.squeeze_bias, unit_input.sum(dim=(2, 3)), squeeze).relu_()
        return torch.addmm(self.expand_bias, hidden, self.expand_weight_t).numpy()
