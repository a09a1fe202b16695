"""Moving the gates' decision threshold after training: one decoupled network, many operating points.

Evaluation gates are z = 1(g > 0). Opening them where g > τ instead (τ < 0: more filters and more
FLOPs; τ > 0: fewer) is exactly a shift of every gate bias b by −τ, so a shifted model is an
ordinary :class:`DecoupledModel` that saves, loads and trains like any other; ``gate_threshold``
records the total shift (also in its checkpoints). The sparsity term leaves many logits close to
0, so small τ move the FLOPs a lot. Downstream layers then see other inputs: re-estimate the
BatchNorm statistics (:func:`recalibrate_batchnorm`) before measuring accuracy.
"""

from __future__ import annotations

import copy

import torch

from .paths import collect_paths
from ...core.errors import UserInputError
from .model import DecoupledModel


def shift_gate_threshold(model: DecoupledModel, threshold: float, *, in_place: bool = False) -> DecoupledModel:
    """A copy of ``model`` whose gates open where g > ``threshold`` (``model`` is not changed), or
    ``model`` itself so changed with ``in_place`` (a training run moving its own threshold)."""
    shifted = model if in_place else copy.deepcopy(model)
    shifted.move_gate_threshold_(threshold)
    return shifted


def threshold_for_flops(model: DecoupledModel, loader, target_reduction: float, *, low: float = -1.0, high: float = 1.0,
                        steps: int = 12, device: str | torch.device = "cpu") -> tuple[float, float]:
    """The smallest τ in [low, high] (to ``(high − low) / 2^steps``) at which the mean FLOPs reduction
    over ``loader``'s images is at least ``target_reduction``, found by bisection.

    The reduction rises with τ at every gate; downstream gates depend on upstream ones, so it is
    monotone only nearly, and the τ returned is one that meets the target on ``loader`` (choose it
    on training images, report on the test split).

    Returns:
        (τ, the FLOPs reduction measured at τ on ``loader``).
    """
    def reduction_at(threshold: float) -> float:
        shifted = shift_gate_threshold(model, threshold)
        return collect_paths(shifted, loader, device=device, progress=False, keep_paths=False).summary()["flops_reduction"]

    if not target_reduction > 0:
        raise UserInputError(f"the target FLOPs reduction must be positive, got {target_reduction}.")
    at_high = reduction_at(high)
    if at_high < target_reduction:
        raise UserInputError(f"even with τ = {high:g} the FLOPs reduction is {at_high:.2f}×, below the target "
                             f"{target_reduction:g}×; raise the upper end of the search.")
    at_low = reduction_at(low)
    if at_low >= target_reduction:
        return low, at_low
    for _ in range(steps):
        middle = (low + high) / 2
        at_middle = reduction_at(middle)
        if at_middle >= target_reduction:
            high, at_high = middle, at_middle
        else:
            low = middle
    return high, at_high
