"""Views of the influential features: their spatial maps, the overlap of the classes' sets, and
the mutual information between features and classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.errors import UserInputError
from ...core.hooks import Hooks
from .final_layer import find_final_linear

__all__ = ["feature_maps", "jaccard_overlap", "mutual_information"]


def feature_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The spatial maps behind the final layer's input features, for the views of the paper's Table 7.

    The maps are the last output of a module, before the final linear layer runs, that has
    shape ``(batch, features, H, W)`` with ``H · W > 1`` (in a CIFAR ResNet, the last block's
    output, whose global average is the final layer's input). Hooks are removed in ``finally``;
    the model runs under ``torch.no_grad()`` in its current mode.

    Args:
        model: A classifier ending in an ``nn.Linear`` layer.
        images: ``(batch, C, H, W)``.

    Returns:
        ``(batch, features, h, w)`` maps.

    Raises:
        UserInputError: No module output of that shape runs before the final layer.
    """
    final = find_final_linear(model, images[:1])
    width = final.in_features
    found: dict[str, torch.Tensor | None] = {"maps": None, "done": None}

    def keep(module: nn.Module, inputs: tuple, output: Any) -> None:
        if found["done"] is None and isinstance(output, torch.Tensor) and output.dim() == 4:
            if output.shape[1] == width and output.shape[2] * output.shape[3] > 1:
                found["maps"] = output.detach().clone()

    def stop(module: nn.Module, inputs: tuple) -> None:
        found["done"] = True

    with Hooks() as hooks:
        for module in model.modules():
            if module is not final.module and not list(module.children()):
                hooks.forward(module, keep)
        hooks.forward_pre(final.module, stop)
        with torch.no_grad():
            model(images)
    if found["maps"] is None:
        raise UserInputError(
            f"no module of {type(model).__name__} outputs (batch, {width}, H, W) maps before the final layer "
            f"{final.name!r}; feature maps can only be shown for models that pool maps into the final layer's input."
        )
    return found["maps"]


def jaccard_overlap(indices: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Pairwise Jaccard overlap ``|J_a ∩ J_b| / |J_a ∪ J_b|`` of the classes' index sets.

    Args:
        indices: One index set per class (a ``(classes, k)`` array or ragged lists).

    Returns:
        float64 ``(classes, classes)``, 1 on the diagonal (0 where both sets are empty).
    """
    sets = [set(int(j) for j in row) for row in indices]
    size = len(sets)
    overlap = np.zeros((size, size), dtype=np.float64)
    for a in range(size):
        for b in range(size):
            union = len(sets[a] | sets[b])
            overlap[a, b] = len(sets[a] & sets[b]) / union if union else 0.0
    return overlap


def mutual_information(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    bins: int = 16,
) -> dict[str, np.ndarray]:
    """Binned (plug-in) estimate of the mutual information between each feature and the class, in bits.

    Each feature is cut into ``bins`` equal-frequency bins (quantiles over the given data; tied
    values, such as the zeros of a ReLU feature, share one bin), and the mutual information is
    computed from the joint histogram of bin and class. The estimate is biased upwards by about
    ``(bins - 1)(classes - 1) / (2 N ln 2)`` bits, which is small for tens of thousands of samples.

    Args:
        features: ``(N, features)``.
        labels: ``(N,)`` integer classes in ``[0, num_classes)``.
        num_classes: Number of classes.
        bins: Bins per feature.

    Returns:
        ``{"overall": (features,) I(feature; class), "per_class": (classes, features)
        I(feature; [class == c]) one-vs-rest}``.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_samples, num_features = features.shape
    quantiles = np.quantile(features, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # (bins-1, features)
    binned = np.stack([np.searchsorted(quantiles[:, j], features[:, j], side="right") for j in range(num_features)], 1)
    # joint[j, b, c]: samples with feature j in bin b and class c.
    flat = (np.arange(num_features)[None, :] * bins + binned) * num_classes + labels[:, None]
    joint = np.bincount(flat.ravel(), minlength=num_features * bins * num_classes).reshape(num_features, bins, num_classes)
    joint = joint / max(num_samples, 1)

    def information(table: np.ndarray) -> np.ndarray:  # table: (features, bins, outcomes), sums to 1 per feature
        bin_marginal = table.sum(2, keepdims=True)
        class_marginal = table.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = table * np.log2(table / (bin_marginal * class_marginal))
        return np.nansum(terms, axis=(1, 2))

    overall = information(joint)
    per_class = np.empty((num_classes, num_features))
    for c in range(num_classes):
        inside = joint[:, :, c]
        per_class[c] = information(np.stack([inside, joint.sum(2) - inside], axis=2))
    return {"overall": overall, "per_class": per_class}
