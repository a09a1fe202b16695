"""The architecture controlling module (gate) and the two wrappers that put it into a conv unit.

For a gated unit (conv → BN → activation) the gate reads the unit's *input* X before the conv runs:
s = GAP(X) ∈ R^C, gate logits g = W2 · ReLU(W1 · s) + b ∈ R^N (Li et al., 2020, Eq. 4), and
z = SemHash(g) ∈ [0, 1]^N. The unit's output becomes Y ⊙ z.

Where the product is taken: :class:`GatedConv` (replacing the conv) computes z; :class:`GatedOutput`
(replacing the BN) multiplies the BN output by z. For ReLU-like activations (ReLU, LeakyReLU) this is
exactly Y ⊙ z because act(z·x) = z·act(x) for z ≥ 0, and with the hard 0/1 gates of evaluation it is
exact for every activation with act(0) = 0. Gating at the BN keeps any model working whose
activation module is reused by several units (torchvision's ResNets) or is a function call.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .semhash import saturating_sigmoid, semhash


class GateSlot:
    """What one gated unit's gate produced in the last forward pass (shared by its two wrappers).

    Attributes:
        gate_logits: g, shape (B, N).
        gates: z, shape (B, N).
        response: GAP of the unit's ungated output after its activation, shape (B, N), without
            gradient (for L_kl, which stops its gradient at y).
        record_response: measure ``response`` in training passes (only L_kl reads it; off saves
            an activation and a pooling pass per gated layer).

    The gate is computed from the unit's input before its conv runs and applied after its
    BatchNorm, in two modules of the user's graph; this slot is what the two share within a pass.
    """

    def __init__(self) -> None:
        self.gate_logits: torch.Tensor | None = None
        self.gates: torch.Tensor | None = None
        self.response: torch.Tensor | None = None
        self.record_response = True

    def clear(self) -> None:
        self.gate_logits = self.gates = self.response = None

    def __deepcopy__(self, memo) -> "GateSlot":
        """A copy keeps the settings, not the last pass's tensors (which may hold an autograd graph,
        and belong to the original's pass); copy.deepcopy's memo keeps the copy shared by both wrappers."""
        copied = GateSlot()
        copied.record_response = self.record_response
        return copied

    def evaluation_gates(self) -> torch.Tensor:
        """The gates evaluation would use, 1(g > 0), with the gradient of σ'(g) (straight-through).

        A sparsity loss on these counts what will actually be skipped at inference; on the noisy
        training gates it can be met by logits just above 0, which are all on at evaluation.
        """
        soft = saturating_sigmoid(self.gate_logits)
        hard = (self.gate_logits > 0).to(soft.dtype)
        return hard + (soft - soft.detach())


class ControllingModule(nn.Module):
    """g = W2 · ReLU(W1 · GAP(X)) + b, with W1 ∈ R^{C/γ × C}, W2 ∈ R^{N × C/γ}.

    W2 starts at zero and b at ``bias_init`` > 0, so at step 0 every filter is on (g = b) and the
    decoupled network computes exactly what the original did; ``bias_init`` well below ln 11 ≈ 2.4
    keeps the gates out of the flat part of the saturating sigmoid, where they could never learn
    to close.
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4, bias_init: float = 1.0,
                 standardize_input: bool = True):
        super().__init__()
        hidden = max(1, in_channels // reduction)
        # s = GAP(X) of a post-ReLU input varies little between inputs compared with its mean, so
        # W1·s is almost the same for every input and the gate degenerates into a per-filter bias
        # (measured: zero spread of g over inputs after training). Standardising each channel of s
        # over the data (BatchNorm without affine parameters) makes the input-dependent part first order.
        self.standardize = nn.BatchNorm1d(in_channels, affine=False) if standardize_input else nn.Identity()
        self.squeeze = nn.Linear(in_channels, hidden)
        self.expand = nn.Linear(hidden, out_channels)
        nn.init.zeros_(self.expand.weight)
        nn.init.constant_(self.expand.bias, bias_init)

    def forward(self, unit_input: torch.Tensor) -> torch.Tensor:
        pooled = self.standardize(unit_input.mean(dim=(2, 3)))
        return self.expand(F.relu(self.squeeze(pooled)))

    @torch.no_grad()
    def evaluation_logits(self, unit_input: torch.Tensor) -> torch.Tensor:
        """g as evaluation computes it (running statistics in the standardisation), whatever the
        module's training flag, without gradients: the frozen gates of path fine-tuning."""
        pooled = unit_input.mean(dim=(2, 3))
        if isinstance(self.standardize, nn.BatchNorm1d):
            bn = self.standardize
            pooled = F.batch_norm(pooled, bn.running_mean, bn.running_var, training=False, eps=bn.eps)
        return self.expand(F.relu(self.squeeze(pooled)))


class GatedConv(nn.Module):
    """A conv whose gate is computed from the conv's input before the conv runs."""

    def __init__(self, conv: nn.Conv2d, controller: ControllingModule, slot: GateSlot, noise_std: float = 1.0,
                 hard_fraction: float = 0.5, detach_input: bool = False, gate_output: bool = False,
                 activation: nn.Module | None = None):
        super().__init__()
        self.conv = conv
        # A unit without BatchNorm has no GatedOutput: the conv output itself (bias included) is
        # multiplied by z here, exactly Y ⊙ z of the paper.
        self.gate_output = gate_output
        object.__setattr__(self, "_response_activation", response_activation_of(activation))
        self.controller = controller
        self.slot = slot
        # Gates follow this flag, not ``self.training``, so BatchNorm statistics can be
        # re-estimated with evaluation gates (see recalibrate_batchnorm).
        self.noisy_gates = True
        # Path fine-tuning: the gates are fixed to what evaluation computes (hard, noise-free, running
        # statistics) and pass no gradient, in training mode too (see DecoupleConfig.path_finetune_epochs).
        self.frozen_paths = False
        self.noise_std = noise_std
        self.hard_fraction = hard_fraction
        self.detach_input = detach_input

    def forward(self, unit_input: torch.Tensor) -> torch.Tensor:
        if self.frozen_paths:
            gate_logits = self.controller.evaluation_logits(unit_input)
            self.slot.gate_logits = gate_logits
            self.slot.gates = (gate_logits > 0).to(gate_logits.dtype)
            return self._output(unit_input)
        gate_logits = self.controller(unit_input.detach() if self.detach_input else unit_input)
        self.slot.gate_logits = gate_logits
        self.slot.gates = semhash(gate_logits, training=self.training and self.noisy_gates, noise_std=self.noise_std,
                                  hard_fraction=self.hard_fraction)
        return self._output(unit_input)

    def _output(self, unit_input: torch.Tensor) -> torch.Tensor:
        output = self.conv(unit_input)
        if not self.gate_output:
            return output
        if self.training and self.slot.record_response:
            with torch.no_grad():
                self.slot.response = self._response_activation(output).mean(dim=(2, 3))
        return output * self.slot.gates[:, :, None, None]


class GatedOutput(nn.Module):
    """The unit's BatchNorm followed by the gate product; records the ungated response for L_kl."""

    def __init__(self, batchnorm: nn.Module, activation: nn.Module | None, slot: GateSlot):
        super().__init__()
        self.batchnorm = batchnorm
        # The activation is only used to measure the response y = GAP(act(BN(conv X))); it is not
        # registered as a submodule so the model's own activation keeps its place in the graph.
        object.__setattr__(self, "_response_activation", response_activation_of(activation))
        self.slot = slot

    def forward(self, conv_output: torch.Tensor) -> torch.Tensor:
        gates = self.slot.gates
        if gates is None:
            raise RuntimeError("GatedOutput ran before its GatedConv; the decoupled graph is broken.")
        if not self.training and _is_frozen_batchnorm2d(self.batchnorm):
            # Evaluation: BN is the affine map a·x + b per channel, so BN and the gate product fold
            # into one pass, (a·z)·x + b·z, instead of two over the feature map.
            bn = self.batchnorm
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
            return torch.addcmul((shift * gates)[:, :, None, None], conv_output, (scale * gates)[:, :, None, None])
        normalised = self.batchnorm(conv_output)
        if self.training and self.slot.record_response:
            with torch.no_grad():
                self.slot.response = self._response_activation(normalised).mean(dim=(2, 3))
        return normalised * gates[:, :, None, None]


def response_activation_of(activation: nn.Module | None) -> nn.Module:
    """A copy of the unit's activation (ReLU when it has none) that never works in place, to measure y."""
    response_activation = copy.copy(activation) if activation is not None else nn.ReLU()
    if hasattr(response_activation, "inplace"):
        response_activation.inplace = False  # never overwrite the output it measures
    return response_activation


def _is_frozen_batchnorm2d(module: nn.Module) -> bool:
    """A BatchNorm2d that, in eval mode, normalises with its running statistics (an affine map)."""
    return (isinstance(module, nn.BatchNorm2d) and module.track_running_stats and module.running_mean is not None
            and module.running_var is not None)
