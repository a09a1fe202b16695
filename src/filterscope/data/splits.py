"""Deterministic, class-stratified hold-out splits."""

from __future__ import annotations

import numpy as np


def stratified_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into a kept part and a held-out part with the same class proportions.

    From every class, ``round(fraction * count)`` images (at least one, and never all of them)
    are held out, chosen by a ``numpy.random.default_rng(seed)`` permutation. Classes are visited
    in label order with one generator, so the result depends only on ``targets``, ``fraction``
    and ``seed``.

    Args:
        targets: Integer labels ``(N,)``.
        fraction: Share of each class to hold out, in ``(0, 1)``.
        seed: Seed of the permutation.

    Returns:
        ``(kept, held_out)``: two sorted, disjoint ``int64`` index arrays that together cover ``range(N)``.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        count = len(members)
        # At least one per class so every class is evaluated; never the whole class so it can be learned.
        n_held = min(max(int(round(fraction * count)), 1), count - 1)
        held_out.append(rng.permutation(members)[:n_held])
    held = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(targets), dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), held.astype(np.int64)
