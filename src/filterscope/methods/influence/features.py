"""The influential features of every class (Badola et al., "Decomposing the Deep", Algorithm 1).

:func:`find_influential_features` (also :data:`run`) makes one streaming pass
(:func:`~filterscope.methods.influence.accumulation.accumulate_influence`) and picks, per class,
the ``k2`` features a criterion ranks highest (:mod:`~filterscope.methods.influence.criteria`).

Example::

    model.eval()
    result = find_influential_features(model, train_loader, InfluenceConfig(k1=5, k2=5))
    result.indices            # (classes, k2) feature indices, row c is J_c
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.atomic import atomic_file
from ...core.errors import UserInputError
from .accumulation import LABEL_SOURCES, InfluenceStatistics, accumulate_influence
from .criteria import CRITERIA, check_every_class_seen, criterion_scores, select_top
from .final_layer import FINAL
from .measures import jaccard_overlap

__all__ = ["InfluenceConfig", "InfluenceResult", "find_influential_features", "run"]


@dataclass
class InfluenceConfig:
    """Settings of the influential-feature analysis.

    Attributes:
        k1: Features kept per instance (top by ℓ1 norm).
        k2: Features kept per class (most frequent, or by the criterion's score).
        criterion: A name in :data:`CRITERIA`: ``"l1"`` (the paper) or ``"contribution"``.
        labels: ``"true"`` or ``"predicted"``: whose labels group the instances into classes.
        at: ``"final"`` (input of the final linear layer) or a unit name.
    """

    k1: int = 5
    k2: int = 5
    criterion: str = "l1"
    labels: str = "true"
    at: str = FINAL

    def validate(self) -> None:
        """Raise one clear error for a value that cannot work (widths are checked against the model later)."""
        if self.criterion not in CRITERIA:
            raise UserInputError(f"unknown criterion {self.criterion!r}; choose one of: {', '.join(sorted(CRITERIA))}.")
        if self.labels not in LABEL_SOURCES:
            raise UserInputError(f"labels must be one of {', '.join(LABEL_SOURCES)}, got {self.labels!r}.")
        if self.criterion == "contribution" and self.at != FINAL:
            raise UserInputError(
                f"the contribution criterion weighs features by the final layer, so it needs at='final', not {self.at!r}; "
                "pass --at final or --criterion l1."
            )
        for name in ("k1", "k2"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UserInputError(f"{name} must be a positive integer, got {value!r}; pass e.g. --{name} 5.")


@dataclass
class InfluenceResult:
    """Influential features of every class.

    Attributes:
        indices: int64 ``(classes, k2)``; row ``c`` is ``J_c``, most influential first.
        scores: float64 ``(classes, features)`` the criterion ranked.
        statistics: The pass's :class:`InfluenceStatistics`.
        config: The settings.
        classes: Class names (``str(label)`` when the data has none).
        final_layer: Name of the final linear layer (``None`` when features were read at a unit).
    """

    indices: np.ndarray
    scores: np.ndarray
    statistics: InfluenceStatistics
    config: InfluenceConfig
    classes: list[str]
    final_layer: str | None = None

    def indices_by_class(self) -> dict[str, list[int]]:
        """``{class name: [feature indices]}``."""
        return {name: [int(j) for j in row] for name, row in zip(self.classes, self.indices)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (index sets, settings, pass accuracy)."""
        return {
            "indices": self.indices_by_class(),
            "config": asdict(self.config),
            "final_layer": self.final_layer,
            "num_features": self.statistics.num_features,
            "num_samples": self.statistics.num_samples,
            "class_counts": [int(n) for n in self.statistics.class_counts],
            "accuracy_on_index_split": self.statistics.accuracy,
            "jaccard_mean_offdiagonal": _mean_offdiagonal(jaccard_overlap(self.indices)),
        }

    def save(self, run_dir: Any) -> dict[str, Path]:
        """Write ``arrays/influence_indices.npz`` into a run directory (a path, or a :class:`~filterscope.RunDir`).

        Returns:
            ``{"arrays": path}``.
        """
        arrays = Path(run_dir.path if hasattr(run_dir, "arrays") else run_dir) / "arrays"
        arrays.mkdir(parents=True, exist_ok=True)
        target = arrays / "influence_indices.npz"
        with atomic_file(target) as stream:
            np.savez(
                stream,
                indices=self.indices,
                scores=self.scores,
                counts=self.statistics.counts,
                class_sums=self.statistics.class_sums,
                class_counts=self.statistics.class_counts,
                feature_mean=self.statistics.feature_mean,
                feature_std=self.statistics.feature_std,
                classes=np.array(self.classes),
                k1=self.config.k1,
                k2=self.config.k2,
                criterion=self.config.criterion,
            )
        return {"arrays": target}


def _mean_offdiagonal(matrix: np.ndarray) -> float:
    n = matrix.shape[0]
    if n < 2:
        return float("nan")
    return float((matrix.sum() - np.trace(matrix)) / (n * (n - 1)))


def _class_names(loader: Iterable, num_classes: int, classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        classes = getattr(getattr(loader, "dataset", None), "classes", None)
    if classes is None or len(classes) != num_classes:
        return [str(label) for label in range(num_classes)]
    return [str(name) for name in classes]


def find_influential_features(
    model: nn.Module,
    loader: Iterable,
    config: InfluenceConfig | None = None,
    *,
    classes: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> InfluenceResult:
    """Algorithm 1: the ``k2`` influential features of every class, from one pass over ``loader``.

    Call ``model.eval()`` first and pass a loader without augmentation (the paper uses the
    training split). The model is not changed.

    Args:
        model: A classifier ending in an ``nn.Linear`` layer, already on ``device``.
        loader: Yields ``(images, labels)`` batches.
        config: k1, k2, criterion, labels and where the features are read.
        classes: Class names; default the loader's ``dataset.classes``.
        device: Where images are sent.
        progress: Show a progress bar.

    Returns:
        The :class:`InfluenceResult`.

    Raises:
        UserInputError: k1 or k2 outside ``[1, features]``, a model whose last layer is not linear,
            a class with no instances, an unknown criterion or unit.
    """
    config = config or InfluenceConfig()
    config.validate()
    statistics = accumulate_influence(
        model, loader, k1=config.k1, k2=config.k2, labels=config.labels, at=config.at, device=device,
        progress=progress,
    )
    weight = None
    if statistics.final_layer is not None:
        weight = dict(model.named_modules())[statistics.final_layer].weight.detach().cpu().double().numpy()
    names = _class_names(loader, statistics.num_classes, classes)
    check_every_class_seen(statistics, names)
    scores = criterion_scores(statistics, config.criterion, weight)
    return InfluenceResult(
        indices=select_top(scores, config.k2),
        scores=scores,
        statistics=statistics,
        config=config,
        classes=names,
        final_layer=statistics.final_layer,
    )


#: The uniform analysis entry point: ``run(model, loader, config) -> InfluenceResult``.
run = find_influential_features
