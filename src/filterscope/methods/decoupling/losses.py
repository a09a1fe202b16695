"""The three decoupling losses of Li et al. (2020), each averaged over the batch and summed over layers.

- L_mi (Eq. 9): Σ_l CE(W_cla^l · z^l, label) — a variational bound on the mutual information between
  the gates of layer l and the class.
- L_kl (Eq. 10): Σ_l KL(z^l ‖ y^l), with z^l and y^l (GAP of the unit's ungated output) each
  normalised into a distribution over the layer's filters: p = (z + ε) / Σ(z + ε). The direction
  is z ‖ y: Σ p_z log(p_z / p_y).
- L_s (Eq. 11): Σ_l | ‖z^l‖₁ − R^l·N^l | (form "paper"), or Σ_l | mean(z^l) − R^l | (form "mean"),
  each per sample and then averaged; or the budget over the batch, Σ_l | mean over samples and
  filters of z^l − R^l | (form "batch", not in the paper), which lets one input use more filters
  than another as long as the batch keeps to R. It is an absolute deviation from a target, not a
  plain L1 penalty: with R > 0 it also pushes gates back on when fewer than R·N are open.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_EPSILON = 1e-6  # ε of the KL distributions


def mutual_information_loss(gates: list[torch.Tensor], labels: torch.Tensor, classifiers):
    """Returns (loss the gates see, loss the classifiers see), each summed over layers.

    The classifiers W_cla learn from CE on detached gates at weight 1, so they track the best decoder
    of the gates, while the gates see CE through frozen classifiers (weighted by λm by the caller).
    The paper's formula trains W_cla only through λm·L_mi; with λm ~ 0.01 it barely learns.
    """
    gate_side = gates[0].new_zeros(())
    classifier_side = gates[0].new_zeros(())
    for z, classifier in zip(gates, classifiers):
        gate_side = gate_side + F.cross_entropy(F.linear(z, classifier.weight.detach(), classifier.bias.detach()), labels)
        classifier_side = classifier_side + F.cross_entropy(classifier(z.detach()), labels)
    return gate_side, classifier_side


def to_distribution(values: torch.Tensor, epsilon: float = KL_EPSILON) -> torch.Tensor:
    """Non-negative (B, N) values → rows that sum to 1 (ε keeps empty rows and log finite)."""
    shifted = values.clamp_min(0) + epsilon
    return shifted / shifted.sum(dim=1, keepdim=True)


def kl_gate_response(gates: torch.Tensor, response: torch.Tensor, epsilon: float = KL_EPSILON) -> torch.Tensor:
    """KL(z ‖ y) over filters, averaged over the batch; the caller passes y detached, so that the gates
    follow the filters' responses and the features are not pulled towards the gates (with the
    gradient into y and hard gates, KL reached 22 per batch and training diverged, CE 36, on ResNet-20)."""
    p = to_distribution(gates, epsilon)
    q = to_distribution(response, epsilon)
    return (p * (p.log() - q.log())).sum(dim=1).mean()


def sparsity_loss(gates: torch.Tensor, ratio: float, form: str) -> torch.Tensor:
    """| ‖z‖₁ − R·N | ("paper") or | mean(z) − R | ("mean") averaged over the batch, or
    | mean over the batch of mean(z) − R | ("batch")."""
    width = gates.shape[1]
    if form == "paper":
        return (gates.sum(dim=1) - ratio * width).abs().mean()
    if form == "batch":
        return (gates.mean() - ratio).abs()
    return (gates.mean(dim=1) - ratio).abs().mean()


def network_sparsity_loss(gates: list[torch.Tensor], ratios: list[float], layer_flops: list[float]) -> torch.Tensor:
    """| Σ_l w_l·(mean(z^l) − R^l) | per input, averaged over the batch ("network" form, not in the paper).

    One FLOPs budget for the whole network instead of one per layer: w_l is the FLOPs layer l's
    gates control (``GatedCostModel.layer_flops``), scaled to average 1 over the layers so that λs
    pushes a gate as hard as the "mean" form does when every layer costs the same. An input meets
    the budget by closing filters wherever they cost its prediction least, layer by layer.
    """
    weights = torch.as_tensor(layer_flops, dtype=gates[0].dtype, device=gates[0].device)
    weights = weights / weights.mean()
    excess = sum(w * (z.mean(dim=1) - r) for w, z, r in zip(weights, gates, ratios))
    return excess.abs().mean()
