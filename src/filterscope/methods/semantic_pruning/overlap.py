"""Interference between classes: how much the filter sets kept (and pruned) for two classes overlap,
and the classes' accumulated-response vectors in principal components."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .responses import AccumulatedResponse
from .selection import PruningMask

__all__ = ["overlap", "overlap_matrices", "response_pca"]


def overlap(a: PruningMask, b: PruningMask) -> dict[str, float]:
    """Overlap of two classes' kept and pruned filter sets (the paper's ρ, and Jaccard).

    Returns:
        ``{"kept_intersection", "kept_jaccard", "pruned_intersection", "pruned_jaccard"}``;
        a Jaccard index of two empty sets is 1.
    """
    pruned_a, pruned_b = a.vector(), b.vector()
    result = {}
    for label, set_a, set_b in (("kept", ~pruned_a, ~pruned_b), ("pruned", pruned_a, pruned_b)):
        intersection, union = int((set_a & set_b).sum()), int((set_a | set_b).sum())
        result[f"{label}_intersection"] = intersection
        result[f"{label}_jaccard"] = intersection / union if union else 1.0
    return result


def overlap_matrices(masks: Sequence[PruningMask]) -> dict[str, np.ndarray]:
    """Pairwise :func:`overlap` of one mask per class (same setting and mode).

    Returns:
        ``(classes, classes)`` arrays keyed as :func:`overlap`'s result, rows and columns in
        the order of ``masks``.
    """
    size = len(masks)
    matrices = {key: np.zeros((size, size)) for key in ("kept_intersection", "kept_jaccard", "pruned_intersection", "pruned_jaccard")}
    for i in range(size):
        for j in range(size):
            for key, value in overlap(masks[i], masks[j]).items():
                matrices[key][i, j] = value
    return matrices


def response_pca(response: AccumulatedResponse, masks: Sequence[PruningMask] | None = None, components: int = 2) -> np.ndarray:
    """Principal components of the classes' accumulated-response vectors.

    Each class's vector is its accumulated response per image over all filters, divided by
    each filter's standard deviation across classes (so that layers with larger maps do not
    dominate), with the filters its mask prunes set to zero when ``masks`` (one per class, in
    class order) is given.

    Returns:
        ``(classes, components)`` coordinates.
    """
    vectors = response.matrix() / np.maximum(response.counts[:, None], 1)
    vectors = vectors / np.maximum(vectors.std(axis=0, keepdims=True), 1e-12)
    if masks is not None:
        vectors = np.stack([np.where(mask.vector(), 0.0, vectors[mask.class_index]) for mask in masks])
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    left, singular, _ = np.linalg.svd(centred, full_matrices=False)
    return left[:, :components] * singular[:components]
