"""The sweep: prune for each class × mode × setting, and evaluate every pruned network."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...core.capture import WHERE
from ...core.unit_hooks import DEFAULT_WHERE
from ...core.errors import UserInputError
from ...core.units import Unit
from .evaluation import MaskEvaluation, evaluate_masks, full_network_reference
from .responses import AccumulatedResponse
from .selection import MODES, parse_setting, resolve_class, select_pruned

__all__ = ["DEFAULT_RATIOS", "SemanticPruningConfig", "sweep"]

#: The default continuous sweep: θ = 0, 0.05, …, 0.6.
DEFAULT_RATIOS = tuple(round(0.05 * step, 2) for step in range(13))


@dataclass
class SemanticPruningConfig:
    """What a semantic-pruning sweep does.

    Attributes:
        modes: Pruning modes, from :data:`MODES`.
        settings: Ratios θ and named settings (``"0-score"``, ``"median"``).
        classes: Class names or indices to prune for; None for every class.
        where: Where responses are read for the ranking (``"response"``, ``"post"``, ``"bn"`` or ``"conv"``;
            see :mod:`filterscope.core.unit_hooks`). The default ``"response"`` reads each unit after its
            own activation, or the ReLU of its BatchNorm output where it has none (the last conv of a
            residual block), so that every unit's sums are non-negative and comparable network-wise;
            ``"post"`` (the default before) reads the signed BatchNorm output there and prunes its most
            negative, heavily used filters first.
        exclude: Unit names never pruned.
        masks_per_pass: Masks evaluated together in one forward pass.
        residual: Measure residual pruning.
    """

    modes: tuple[str, ...] = ("nwp", "lwp")
    settings: tuple[Any, ...] = DEFAULT_RATIOS
    classes: tuple[Any, ...] | None = None
    where: str = DEFAULT_WHERE
    exclude: tuple[str, ...] = ()
    masks_per_pass: int = 8
    residual: bool = True

    def validate(self) -> None:
        for mode in self.modes:
            if mode not in MODES:
                raise UserInputError(f"unknown pruning mode {mode!r}; pass one of {', '.join(MODES)}.")
        if not self.modes or not self.settings:
            raise UserInputError("pass at least one mode and one ratio.")
        self.settings = tuple(parse_setting(value) for value in self.settings)
        if self.where not in WHERE:
            raise UserInputError(f"where must be one of {', '.join(WHERE)}, got {self.where!r}.")
        if self.masks_per_pass < 1:
            raise UserInputError(f"masks_per_pass must be at least 1, got {self.masks_per_pass}.")


def sweep(
    model: nn.Module,
    units: Sequence[Unit],
    response: AccumulatedResponse,
    eval_loader: Iterable,
    config: SemanticPruningConfig | None = None,
    *,
    progress: bool = True,
) -> list[MaskEvaluation]:
    """Prune for each class × mode × setting and evaluate every pruned network.

    The full network is evaluated once (it is RP's reference); masks that prune nothing
    (θ = 0) are read from that pass instead of being evaluated again.

    Returns:
        One evaluation per (class, mode, setting), classes outer, then modes, then settings.
    """
    config = config or SemanticPruningConfig()
    config.validate()
    class_indices = (
        list(range(response.num_classes)) if config.classes is None
        else [resolve_class(value, response.classes, response.num_classes) for value in config.classes]
    )
    masks, rows = [], []
    for class_index in class_indices:
        for mode in config.modes:
            for setting in config.settings:
                mask = select_pruned(response, class_index, setting, mode, exclude=config.exclude)
                rows.append(mask)
                if mask.num_pruned:
                    masks.append(mask)
    reference = full_network_reference(model, units, eval_loader, response.num_classes, progress=progress)
    evaluations = evaluate_masks(model, units, eval_loader, masks, response.num_classes,
                                 masks_per_pass=config.masks_per_pass, residual=config.residual,
                                 baseline=reference.response, progress=progress)
    by_id = {id(mask): evaluation for mask, evaluation in zip(masks, evaluations)}
    # Masks that prune nothing are the full network: read from the reference pass.
    return [by_id[id(mask)] if mask.num_pruned else reference.evaluation(mask) for mask in rows]
