"""Improved SemHash (Kaiser & Bengio, 2018) as used by network decoupling (Li et al., 2020, Eq. 5–7).

Training: noise α ~ N(0, 1) is added to the gate logits g; v1 = σ'(g + α) is the saturating sigmoid
``max(0, min(1, 1.2·σ(x) − 0.1))`` and v2 = 1(g + α > 0). For a random half of the *samples* the gate is
the hard v2 with the gradient of v1 (straight-through); for the other half it is the soft v1.
Evaluation: z = 1(g > 0), no noise.

The half split is per sample, not per channel: the one public implementation of the paper mixes
per channel, which gives every sample a mixture of hard and soft gates.
"""

from __future__ import annotations

import torch


def saturating_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ'(x) = max(0, min(1, 1.2·σ(x) − 0.1)); flat (zero gradient) for |x| > ln(11) ≈ 2.40."""
    return torch.clamp(1.2 * torch.sigmoid(x) - 0.1, 0.0, 1.0)


def semhash(gate_logits: torch.Tensor, training: bool, generator: torch.Generator | None = None,
            noise_std: float = 1.0, hard_fraction: float = 0.5) -> torch.Tensor:
    """Gate values z in [0, 1] from gate logits of shape (batch, filters).

    Args:
        gate_logits: g, shape (B, N).
        training: noisy, half-hard/half-soft gates when True; hard 1(g > 0) otherwise.
        generator: random source for the noise and the half split (the global torch RNG if None,
            which the training loop seeds per epoch).
        noise_std: standard deviation of α (1 in the paper).
        hard_fraction: share of the samples that take the hard straight-through gates (½ in the
            paper); 1 trains every sample with the 0/1 gates evaluation will use.
    """
    if not training:
        return (gate_logits > 0).to(gate_logits.dtype)
    noise = torch.randn(gate_logits.shape, generator=generator, device=gate_logits.device, dtype=gate_logits.dtype)
    noisy = gate_logits + noise_std * noise
    soft = saturating_sigmoid(noisy)
    hard = (noisy > 0).to(noisy.dtype)
    straight_through = hard + (soft - soft.detach())  # value of v2, gradient of v1
    batch = gate_logits.shape[0]
    # A random half of the samples (per sample, not per channel) take the hard gates.
    order = torch.randperm(batch, generator=generator, device=gate_logits.device)
    use_hard = torch.zeros(batch, dtype=torch.bool, device=gate_logits.device)
    use_hard[order[: int(round(batch * hard_fraction))]] = True
    return torch.where(use_hard[:, None], straight_through, soft)
