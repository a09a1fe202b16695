"""Criteria: which features of a class are influential, given the statistics of Algorithm 1.

Index sets are chosen by a *criterion* from the registry :data:`CRITERIA`:

* ``"l1"`` (the paper): rank features of class ``c`` by ``counts[c]``;
* ``"contribution"`` (beyond the paper): rank them by their mean contribution to the class
  logit, ``mean_c(I_j) · W[c, j]``, which needs the final layer's weight.

The ``k2`` highest-scoring features of a class are its set ``J_c`` (ties go to the lower index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...core.errors import UserInputError
from .accumulation import InfluenceStatistics
from .final_layer import FINAL

__all__ = [
    "CRITERIA",
    "Criterion",
    "check_every_class_seen",
    "criterion_scores",
    "l1_frequency",
    "mean_contribution",
    "register_criterion",
    "select_top",
]

#: A criterion maps the statistics (and the final layer's weight, ``(classes, features)``, or
#: None) to ``(classes, features)`` scores; the ``k2`` highest of each row are the class's set.
Criterion = Callable[[InfluenceStatistics, "np.ndarray | None"], np.ndarray]

CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Decorator that adds a selection criterion to :data:`CRITERIA` under ``name``."""

    def decorate(criterion: Criterion) -> Criterion:
        if name in CRITERIA:
            raise ValueError(f"criterion {name!r} is registered twice")
        CRITERIA[name] = criterion
        return criterion

    return decorate


@register_criterion("l1")
def l1_frequency(statistics: InfluenceStatistics, weight: np.ndarray | None = None) -> np.ndarray:
    """The paper's criterion: how often a feature was among an instance's top-``k1`` by ℓ1 norm."""
    return statistics.counts.astype(np.float64)


@register_criterion("contribution")
def mean_contribution(statistics: InfluenceStatistics, weight: np.ndarray | None = None) -> np.ndarray:
    """Mean contribution of feature ``j`` to the logit of class ``c`` over class ``c``: ``mean_c(I_j) · W[c, j]``."""
    if weight is None or statistics.at != FINAL:
        raise UserInputError(
            "the contribution criterion needs the final layer's weight and features read at its input; "
            "pass at='final' (or use criterion='l1')."
        )
    if weight.shape != statistics.counts.shape:
        raise UserInputError(
            f"the weight has shape {weight.shape} but the statistics cover {statistics.counts.shape} "
            "(classes, features); pass the final layer's weight of the same model."
        )
    return statistics.class_means * np.asarray(weight, dtype=np.float64)


def select_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring columns of every row, highest first; ties go to the lower index.

    Args:
        scores: ``(classes, features)``.
        k: How many per row.

    Returns:
        ``(classes, k)`` int64 indices.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int64)


def criterion_scores(statistics: InfluenceStatistics, criterion: str = "l1", weight: np.ndarray | None = None) -> np.ndarray:
    """``(classes, features)`` scores of a registered criterion.

    Raises:
        UserInputError: An unknown criterion, or a class with no instances.
    """
    if criterion not in CRITERIA:
        raise UserInputError(f"unknown criterion {criterion!r}; choose one of: {', '.join(sorted(CRITERIA))}.")
    check_every_class_seen(statistics)
    return CRITERIA[criterion](statistics, weight)


def check_every_class_seen(statistics: InfluenceStatistics, classes: Sequence[str] | None = None) -> None:
    """Raise one clear error, naming the class, when a class has no instances in the statistics."""
    empty = np.flatnonzero(statistics.class_counts == 0)
    if len(empty):
        label = int(empty[0])
        name = f"{classes[label]!r} (label {label})" if classes is not None and label < len(classes) else f"label {label}"
        by = "true labels" if statistics.labels == "true" else "the model's predictions"
        raise UserInputError(
            f"class {name} has no instances in the data (by {by}), so it has no influential features; "
            "pass data with at least one image of every class."
        )
