"""Per-class sums of each unit's per-channel statistic, streamed in fixed memory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import split_batch
from .devices import check_model_device
from .errors import UserInputError
from .hooks import Hooks
from .statistics import channel_statistics, check_statistics
from .unit_hooks import DEFAULT_WHERE, check_units, register_unit_hooks
from .units import Unit

__all__ = ["accumulate_by_class"]


class _ClassAccumulator:
    """Adds each sample's per-channel statistic to the row of its class, on the model's device."""

    def __init__(self, units: Sequence[Unit], num_classes: int, stat: str, device: torch.device):
        self.stat = stat
        self.sums = {
            unit.name: torch.zeros((num_classes, unit.out_channels), dtype=torch.float64, device=device) for unit in units
        }
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.labels: torch.Tensor | None = None  # labels of the batch going through the model now

    def add(self, unit: Unit, activation: torch.Tensor) -> None:
        if activation.dim() == 3:
            activation = activation.unsqueeze(0)
        if self.labels is None or activation.shape[0] != self.labels.shape[0]:
            raise RuntimeError(
                f"unit {unit.name!r} saw a batch of {activation.shape[0]} samples but the loader gave "
                f"{None if self.labels is None else self.labels.shape[0]} labels."
            )
        values = channel_statistics(activation, self.stat, dtype=torch.float64)
        self.sums[unit.name].index_add_(0, self.labels.to(values.device), values)


def _class_labels(batch_labels: torch.Tensor, num_classes: int, device: torch.device) -> torch.Tensor:
    """The batch's labels as int64 on ``device``, or one clear error for a label out of range."""
    labels = batch_labels.reshape(-1).to(device=device, dtype=torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise UserInputError(
            f"label {bad} is outside [0, {num_classes}); pass the data set's number of classes as num_classes."
        )
    return labels


def accumulate_by_class(
    model: nn.Module,
    units: Sequence[Unit],
    loader: Iterable,
    num_classes: int,
    stat: str = "sum",
    *,
    where: str = DEFAULT_WHERE,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Sum each unit's per-channel statistic over the samples of each class, in fixed memory.

    Per-sample rows are never stored: each batch is added to ``(classes, channels)`` float64
    sums on ``device``. Under ``torch.distributed`` (when a process group is initialised)
    each rank sums its own shard and the sums and counts are all-reduced, so every rank
    returns the totals. Runs under ``torch.no_grad()``; the model is not switched to eval
    mode (call ``model.eval()`` first) nor moved.

    Args:
        model: The model, already on ``device``.
        units: Units from :func:`filterscope.find_units` on this model.
        loader: Yields ``(images, labels)`` batches with integer labels in ``[0, num_classes)``.
        num_classes: Number of classes.
        stat: The statistic summed, from :data:`~filterscope.core.statistics.STATISTICS`
            (``"sum"`` gives the accumulated response of semantic pruning).
        where: ``"conv"``, ``"bn"`` or ``"post"`` (see :mod:`filterscope.core.unit_hooks`).
        device: Where the images (and the sums) live.
        progress: Show a tqdm progress bar.

    Returns:
        ``{unit_name: float64 (num_classes, out_channels) sums, "__counts__": int64
        (num_classes,) samples per class}``. Divide a unit's sums by the counts for class means.

    Raises:
        UserInputError: Bad arguments, a model not on ``device``, or a label outside
            ``[0, num_classes)``.
    """
    (stat,) = check_statistics((stat,))
    check_units(model, units, where)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer, got {num_classes!r}.")
    device = check_model_device(model, device)
    accumulator = _ClassAccumulator(units, num_classes, stat, device)
    try:
        with Hooks() as hooks, torch.no_grad():
            register_unit_hooks(hooks, units, where, accumulator.add)
            for batch in tqdm(loader, desc="accumulate", disable=not progress, leave=False):
                images, batch_labels = split_batch(batch)
                labels = _class_labels(batch_labels, num_classes, device)
                accumulator.labels = labels
                model(images.to(device))
                accumulator.counts += torch.bincount(labels, minlength=num_classes)
    finally:
        accumulator.labels = None

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in [*accumulator.sums.values(), accumulator.counts]:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)

    result = {name: sums.cpu().numpy() for name, sums in accumulator.sums.items()}
    result["__counts__"] = accumulator.counts.cpu().numpy()
    return result
