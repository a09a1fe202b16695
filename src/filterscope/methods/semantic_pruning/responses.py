"""Accumulated responses: how much each filter is used by each class (one streaming pass).

The *activation magnitude* of filter ``i`` for one input is ``r_i = Σ_{x,y} R_{x,y,i}``, the sum
over space of the filter's output; its *accumulated response* for class ``c`` is the sum of
``r_i`` over the training images of ``c``. One streaming pass
(:func:`accumulate_responses`, over :func:`filterscope.core.capture.accumulate_by_class`) gives the
whole ``(classes × filters)`` matrix of every unit.

Where the output is read (``where``) matters on a network with BatchNorm:

* ``"conv"`` (the paper's choice, on AlexNet without BatchNorm): the raw conv output. With
  BatchNorm after it, the conv output's per-channel mean is whatever BatchNorm subtracts
  again (its running mean), so its sign and size say nothing about how much the filter is used.
* ``"bn"``: after the BatchNorm, before the activation: centred per channel over the
  training set, so summed over all classes it is about ``N·H·W·β``; per class it is
  negative for filters the class switches off, which gives "0-score" a meaning.
* ``"post"``: after the activation module, i.e. what the next layer actually receives.
  Units whose activation comes only after a residual addition (``conv2`` of an option-A
  ResNet block) or that have none (a linear bottleneck) have no activation of their own, and
  their ``"post"`` output is the BatchNorm output (signed), so network-wise ranking puts those
  filters with a negative sum — among the most used — first.
* ``"response"`` (the default, :data:`filterscope.core.unit_hooks.DEFAULT_WHERE`): after the
  unit's own activation where it has one, and the ReLU of its BatchNorm output where it has
  none, so a filter's response is what it contributes above zero. It is the default because it
  measured best: on the shared ResNet-20, class cat, network-wise θ 0.1, recall 0.782 against
  0.103 for ``"post"`` and AUC 0.896 against 0.768
  (``benchmarks/semantic_pruning/readout/README.md``), and over the 10 classes × θ × both modes
  sweep it keeps far more at small θ (``benchmarks/semantic_pruning/results/semantic_findings_response.md``).
  ``"conv"`` is the least meaningful for "0-score": 73 % of the (class, filter) sums are
  ``<= 0`` only because BatchNorm will subtract the channel mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.capture import WHERE, accumulate_by_class
from ...core.unit_hooks import DEFAULT_WHERE
from ...core.errors import UserInputError
from ...core.units import Unit

__all__ = ["AccumulatedResponse", "accumulate_responses"]


@dataclass
class AccumulatedResponse:
    """Per-class accumulated responses of every unit's filters.

    Attributes:
        sums: ``{unit_name: float64 (classes, filters)}`` sums of each filter's spatial sum
            over the images of each class, units in execution order.
        counts: Images per class, ``(classes,)``.
        where: Where the outputs were read (``"conv"``, ``"bn"`` or ``"post"``).
        classes: Class names, if known.
    """

    sums: dict[str, np.ndarray]
    counts: np.ndarray
    where: str
    classes: list[str] | None = None

    @property
    def unit_names(self) -> list[str]:
        return list(self.sums)

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_filters(self) -> int:
        return int(sum(array.shape[1] for array in self.sums.values()))

    def matrix(self, units: Sequence[str] | None = None) -> np.ndarray:
        """The ``(classes, filters)`` matrix, units' filters concatenated in order."""
        names = self.unit_names if units is None else list(units)
        return np.concatenate([self.sums[name] for name in names], axis=1)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` readable by :meth:`load`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"sum/{name}": array for name, array in self.sums.items()}
        np.savez(path, __counts__=self.counts, __where__=np.array(self.where),
                 __classes__=np.array(self.classes or [], dtype=str), __order__=np.array(self.unit_names), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AccumulatedResponse:
        with np.load(path) as stored:
            order = [str(name) for name in stored["__order__"]]
            classes = [str(name) for name in stored["__classes__"]] or None
            return cls({name: stored[f"sum/{name}"] for name in order}, stored["__counts__"], str(stored["__where__"]), classes)


def accumulate_responses(
    model: nn.Module,
    units: Sequence[Unit],
    loader: Iterable,
    num_classes: int,
    *,
    where: str = DEFAULT_WHERE,
    classes: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> AccumulatedResponse:
    """Accumulated response of every filter for every class, in one streaming pass.

    Call ``model.eval()`` first; the model is not changed.

    Args:
        model: The trained CNN, on ``device``.
        units: Units of ``model`` from :func:`filterscope.find_units`.
        loader: Training images and labels, without augmentation.
        num_classes: Number of classes.
        where: ``"response"`` (the default), ``"post"``, ``"bn"`` or ``"conv"`` (see the module docstring).
        classes: Class names, kept with the result.
        device: Where the model runs.
        progress: Show a progress bar.

    Returns:
        The per-class sums and image counts.
    """
    if where not in WHERE:
        raise UserInputError(f"where must be one of {', '.join(WHERE)}, got {where!r}; pass where='response'.")
    sums = accumulate_by_class(model, units, loader, num_classes, "sum", where=where, device=device, progress=progress)
    counts = sums.pop("__counts__")
    return AccumulatedResponse({unit.name: sums[unit.name] for unit in units}, counts, where,
                               list(classes) if classes is not None else None)
