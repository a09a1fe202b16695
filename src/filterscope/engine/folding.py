"""Folding a BatchNorm into the convolution before it: one affine map instead of two passes.

For BN(conv(x)) in evaluation, BN is y ↦ a·y + c per channel with a = γ / sqrt(σ² + ε) and
c = β − μ·a, so BN(W ∗ x + b) = (a·W) ∗ x + (a·b + c). Written here because torch's own
``torch.nn.utils.fusion.fuse_conv_bn_weights`` returns Parameters tied to autograd and needs a bias
tensor; this returns plain tensors for an executor that never trains.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def folded_weights(conv: nn.Conv2d, batchnorm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one conv with ``batchnorm`` (or nothing) folded in, detached copies."""
    weight = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    if batchnorm is None:
        return weight, bias
    if not (getattr(batchnorm, "track_running_stats", False) and batchnorm.running_var is not None):
        raise ValueError(f"{type(batchnorm).__name__} without running statistics cannot be folded into its conv.")
    scale = torch.rsqrt(batchnorm.running_var + batchnorm.eps)
    if batchnorm.affine:
        scale = scale * batchnorm.weight
    shift = -batchnorm.running_mean * scale
    if batchnorm.affine:
        shift = shift + batchnorm.bias
    return weight * scale.reshape(-1, 1, 1, 1), bias * scale + shift
