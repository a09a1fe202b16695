"""Which filters to prune for one class: a boolean mask per unit, chosen by accumulated response.

A pruning is a boolean mask per unit (True = filter pruned). Filters are ranked by their
accumulated response for the class, lowest first, either over the whole network
(network-wise, ``"nwp"``) or within each unit (layer-wise, ``"lwp"``), and the ``θ`` share with
the lowest response is pruned. Settings (:func:`parse_setting`): a ratio ``θ ∈ [0, 1]``, the
paper's ``"0-score"`` (prune every filter whose accumulated response is ``<= 0``) and
``"median"`` (prune the filters below the median, network-wise or per unit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.errors import UserInputError
from .responses import AccumulatedResponse

__all__ = ["MODES", "NAMED_SETTINGS", "PruningMask", "parse_setting", "resolve_class", "select_pruned"]

#: Pruning modes: network-wise (all filters ranked together) and layer-wise (each unit alone).
MODES = ("nwp", "lwp")

#: The paper's discrete settings besides a plain ratio.
NAMED_SETTINGS = ("0-score", "median")


def parse_setting(value: Any) -> float | str:
    """A pruning setting: a ratio in [0, 1], ``"0-score"`` or ``"median"``.

    Strings holding numbers (``"0.33"``) become floats.

    Raises:
        UserInputError: A ratio outside [0, 1] or an unknown name.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in NAMED_SETTINGS:
            return text
        try:
            value = float(text)
        except ValueError:
            raise UserInputError(
                f"unknown pruning setting {value!r}; pass a ratio in [0, 1] or one of {', '.join(NAMED_SETTINGS)}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
        raise UserInputError(f"pruning ratio must be a number in [0, 1], got {value!r}; pass e.g. 0.25.")
    return float(value)


def resolve_class(value: Any, classes: Sequence[str] | None, num_classes: int) -> int:
    """A class index from an index or a class name.

    Raises:
        UserInputError: An unknown name or an index outside ``[0, num_classes)``.
    """
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        if classes is None or value not in classes:
            known = ", ".join(classes) if classes else f"indices 0..{num_classes - 1}"
            raise UserInputError(f"unknown class {value!r}; pass one of {known}.")
        return list(classes).index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise UserInputError(f"class must be a name or an index, got {value!r}.") from None
    if not 0 <= index < num_classes:
        raise UserInputError(f"class index {index} is outside [0, {num_classes}); pass an index from 0 to {num_classes - 1}.")
    return index


@dataclass
class PruningMask:
    """The filters pruned for one class.

    Attributes:
        class_index: The class the network is pruned for.
        setting: The ratio θ, ``"0-score"`` or ``"median"``.
        mode: ``"nwp"`` or ``"lwp"``.
        pruned: ``{unit_name: bool (filters,)}``, True where the filter is pruned; every unit
            of the response, excluded ones all False.
        excluded: Units left out of the ranking (never pruned).
    """

    class_index: int
    setting: float | str
    mode: str
    pruned: dict[str, np.ndarray]
    excluded: tuple[str, ...] = ()

    @property
    def num_pruned(self) -> int:
        return int(sum(int(array.sum()) for array in self.pruned.values()))

    @property
    def num_filters(self) -> int:
        return int(sum(array.size for array in self.pruned.values()))

    @property
    def fraction(self) -> float:
        """Share of all filters pruned."""
        return self.num_pruned / max(self.num_filters, 1)

    @property
    def per_unit_fraction(self) -> dict[str, float]:
        return {name: float(array.mean()) if array.size else 0.0 for name, array in self.pruned.items()}

    @property
    def emptied_units(self) -> list[str]:
        """Units whose every filter is pruned: the network is dead there."""
        return [name for name, array in self.pruned.items() if array.size and bool(array.all())]

    @property
    def dead(self) -> bool:
        """Whether some unit lost all its filters (nothing passes through it any more).

        Such a network is reported, not refused: it is still evaluated (in a plain chain it
        then predicts a constant; in a residual network the shortcut still carries a signal
        past the emptied unit)."""
        return bool(self.emptied_units)

    def keep(self, unit_name: str) -> np.ndarray:
        """Indices of the filters kept in a unit."""
        return np.flatnonzero(~self.pruned[unit_name])

    def vector(self) -> np.ndarray:
        """All units' pruned flags concatenated (the order of :meth:`AccumulatedResponse.matrix`)."""
        return np.concatenate(list(self.pruned.values()))


def _lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` lowest scores (ties to the lower index)."""
    chosen = np.zeros(scores.shape[0], dtype=bool)
    if count > 0:
        chosen[np.argsort(scores, kind="stable")[:count]] = True
    return chosen


def _select(scores: np.ndarray, setting: float | str) -> np.ndarray:
    if setting == "0-score":
        return scores <= 0
    if setting == "median":
        return scores < np.median(scores)
    return _lowest(scores, int(math.floor(float(setting) * scores.shape[0] + 1e-9)))


def select_pruned(
    response: AccumulatedResponse,
    class_index: int,
    setting: Any,
    mode: str = "lwp",
    *,
    exclude: Sequence[str] = (),
) -> PruningMask:
    """The filters to prune for one class, by its accumulated responses.

    Network-wise (``"nwp"``), all filters of the included units are ranked together and the
    ``floor(θ·N)`` with the lowest accumulated response are pruned; layer-wise (``"lwp"``),
    each unit prunes ``floor(θ·n_unit)`` of its own. ``"0-score"`` prunes every filter whose
    accumulated response is ``<= 0`` (the same in both modes); ``"median"`` prunes the filters
    below the median of the network (``"nwp"``) or of each unit (``"lwp"``). Ties go to the
    lower filter index. The first and last units are included unless named in ``exclude``.

    Args:
        response: From :func:`accumulate_responses`.
        class_index: The class to prune for.
        setting: A ratio θ in [0, 1], ``"0-score"`` or ``"median"`` (see :func:`parse_setting`).
        mode: ``"nwp"`` or ``"lwp"``.
        exclude: Unit names never pruned.

    Returns:
        The mask.

    Raises:
        UserInputError: A bad mode, setting or class, a class with no images in the response
            pass, or an unknown unit in ``exclude``.
    """
    if mode not in MODES:
        raise UserInputError(f"unknown pruning mode {mode!r}; pass one of {', '.join(MODES)}.")
    setting = parse_setting(setting)
    class_index = resolve_class(class_index, response.classes, response.num_classes)
    if int(response.counts[class_index]) == 0:
        name = response.classes[class_index] if response.classes else class_index
        raise UserInputError(
            f"class {name!r} has no images in the data the responses were accumulated on; "
            "accumulate them on a split that contains the class."
        )
    unknown = [name for name in exclude if name not in response.sums]
    if unknown:
        raise UserInputError(f"unknown units to exclude: {', '.join(unknown)}; pass names from find_units(model).")
    included = [name for name in response.unit_names if name not in exclude]
    pruned = {name: np.zeros(array.shape[1], dtype=bool) for name, array in response.sums.items()}
    if included:
        if mode == "lwp":
            for name in included:
                pruned[name] = _select(response.sums[name][class_index], setting)
        else:
            scores = np.concatenate([response.sums[name][class_index] for name in included])
            chosen = _select(scores, setting)
            offset = 0
            for name in included:
                width = response.sums[name].shape[1]
                pruned[name] = chosen[offset:offset + width]
                offset += width
    return PruningMask(class_index, setting, mode, pruned, tuple(exclude))
