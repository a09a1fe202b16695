"""Per-channel statistics of each unit's output, captured with hooks that never outlive their use.

``with capture(model, units) as rec:`` registers forward hooks on the units' modules; every
batch that then goes through ``model`` is reduced, inside the hook, to one number per sample
and channel (spatial mean, sum, max or fraction of positive positions, see
:mod:`filterscope.core.statistics`) and written into preallocated ``(samples, channels)``
float32 arrays. Activation maps are never kept. The hooks are removed when the block ends,
after success and after an error.

Where the statistics are read (``where``: ``"conv"``, ``"bn"`` or ``"post"``) is explained in
:mod:`filterscope.core.unit_hooks`.

None of these functions changes the model: no parameter, buffer or training flag. Call
``model.eval()`` first if you want inference-mode BatchNorm and dropout.

:func:`run_capture` runs a whole loader and also returns labels and predictions;
:func:`accumulate_by_class` (:mod:`filterscope.core.class_statistics`, re-exported here) streams
per-class sums in fixed memory (and all-reduces them under ``torch.distributed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import split_batch
from .class_statistics import accumulate_by_class
from .devices import check_model_device
from .errors import UserInputError
from .hooks import Hooks
from .statistics import STATISTICS, channel_statistics, check_statistics
from .unit_hooks import DEFAULT_WHERE, WHERE, check_units, register_unit_hooks
from .units import Unit

__all__ = [
    "STATISTICS",
    "WHERE",
    "Recorder",
    "CaptureResult",
    "capture",
    "run_capture",
    "accumulate_by_class",
    "channel_statistics",
]

_GROWTH_ROWS = 1024  # rows added at a time when the number of samples is not known


# --------------------------------------------------------------------------------------
# capture: per-sample rows
# --------------------------------------------------------------------------------------


class Recorder:
    """Per-sample, per-channel statistics of each unit, filled by :func:`capture`'s hooks.

    Attributes:
        stats: The statistics recorded.
        where: Where the unit outputs are read (see :mod:`filterscope.core.unit_hooks`).
        unit_names: Names of the captured units, in the order given.
        num_seen: Number of samples whose forward pass completed.
    """

    def __init__(
        self,
        units: Sequence[Unit],
        stats: tuple[str, ...],
        where: str,
        num_samples: int | None,
        *,
        initial_rows: int | None = None,
    ):
        self.stats = stats
        self.where = where
        self.unit_names = [unit.name for unit in units]
        self.num_seen = 0
        self._fixed_rows = num_samples  # None: the buffers grow as needed
        self._out_channels = {unit.name: unit.out_channels for unit in units}
        rows = num_samples if num_samples is not None else (initial_rows or _GROWTH_ROWS)
        self._buffers: dict[str, dict[str, np.ndarray]] = {
            stat: {name: np.full((rows, channels), np.nan, dtype=np.float32) for name, channels in self._out_channels.items()}
            for stat in stats
        }
        self._batch_rows: int | None = None  # rows of the batch going through the model now

    @property
    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """``arrays[stat][unit_name]``: a float32 ``(num_seen, out_channels)`` array.

        Rows are samples in the order they went through the model. A unit that did not run
        for a sample (data-dependent control flow) has NaN in that row. These are views of
        the recorder's buffers; copy them to keep them past :meth:`reset`.
        """
        return {
            stat: {name: buffer[: self.num_seen] for name, buffer in by_unit.items()}
            for stat, by_unit in self._buffers.items()
        }

    def reset(self) -> None:
        """Forget every sample seen; the buffers are kept and refilled from row 0."""
        self.num_seen = 0
        self._batch_rows = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorder's buffers (its only storage)."""
        return sum(buffer.nbytes for by_unit in self._buffers.values() for buffer in by_unit.values())

    # called by hooks ------------------------------------------------------------------
    def _begin_batch(self) -> None:
        self._batch_rows = None

    def _end_batch(self) -> None:
        if self._batch_rows is not None:
            self.num_seen += self._batch_rows
        self._batch_rows = None

    def _record(self, unit: Unit, activation: torch.Tensor) -> None:
        if activation.dim() == 3:  # an unbatched (C, H, W) input
            activation = activation.unsqueeze(0)
        batch = activation.shape[0]
        if self._batch_rows is None:
            self._make_room(batch)
            self._batch_rows = batch
        elif batch != self._batch_rows:
            raise RuntimeError(
                f"unit {unit.name!r} saw a batch of {batch} while other units saw {self._batch_rows}; "
                "capture needs every unit to see the same samples."
            )
        rows = slice(self.num_seen, self.num_seen + batch)
        for stat in self.stats:
            values = channel_statistics(activation, stat)
            self._buffers[stat][unit.name][rows] = values.cpu().numpy()

    def _make_room(self, batch: int) -> None:
        """Make sure rows ``num_seen : num_seen + batch`` exist and start as NaN."""
        needed = self.num_seen + batch
        capacity = next(iter(next(iter(self._buffers.values())).values())).shape[0]
        if needed > capacity:
            if self._fixed_rows is not None:
                raise UserInputError(
                    f"capture was given num_samples={self._fixed_rows} but saw at least {needed} samples; "
                    "pass a larger num_samples, or num_samples=None to let the arrays grow."
                )
            new_capacity = max(needed, 2 * capacity, _GROWTH_ROWS)
            for by_unit in self._buffers.values():
                for name, buffer in by_unit.items():
                    grown = np.full((new_capacity, buffer.shape[1]), np.nan, dtype=np.float32)
                    grown[: self.num_seen] = buffer[: self.num_seen]
                    by_unit[name] = grown
        for by_unit in self._buffers.values():
            for buffer in by_unit.values():
                buffer[self.num_seen : needed] = np.nan


@contextmanager
def capture(
    model: nn.Module,
    units: Sequence[Unit],
    stats: Iterable[str] = ("mean",),
    *,
    where: str = DEFAULT_WHERE,
    num_samples: int | None = None,
) -> Iterator[Recorder]:
    """Record per-channel statistics of the units' outputs for every batch run through ``model``.

    Example::

        model.eval()
        units = find_units(model)
        with torch.no_grad(), capture(model, units, ("mean", "max")) as rec:
            for images, _ in loader:
                model(images)
        responses = rec.arrays["mean"]["layer1.0.conv1"]   # (samples, channels)

    Args:
        model: The model the units belong to; batches must go through ``model(...)`` itself
            (its forward hooks count the samples). It is not modified and its train/eval mode
            is not switched: call ``model.eval()`` first for inference behaviour.
        units: Units from :func:`filterscope.find_units` on this model.
        stats: Statistics to record, from :data:`STATISTICS`.
        where: ``"conv"``, ``"bn"``, ``"post"`` or ``"response"`` (see :mod:`filterscope.core.unit_hooks`).
        num_samples: Preallocate this many rows; more samples raise. ``None`` grows the
            arrays in chunks.

    Yields:
        The :class:`Recorder`; its arrays stay readable after the block ends.

    Raises:
        UserInputError: Unknown statistic or ``where``, units not of this model, or more
            samples than ``num_samples``.
    """
    with _capture(model, units, stats, where=where, num_samples=num_samples) as recorder:
        yield recorder


@contextmanager
def _capture(
    model: nn.Module,
    units: Sequence[Unit],
    stats: Iterable[str],
    *,
    where: str,
    num_samples: int | None,
    initial_rows: int | None = None,
) -> Iterator[Recorder]:
    stats = check_statistics(stats)
    check_units(model, units, where)
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise UserInputError(f"num_samples must be a positive integer or None, got {num_samples!r}.")
    recorder = Recorder(units, stats, where, num_samples, initial_rows=initial_rows)
    try:
        with Hooks() as hooks:
            hooks.forward_pre(model, lambda module, inputs: recorder._begin_batch())
            hooks.forward(model, lambda module, inputs, output: recorder._end_batch())
            register_unit_hooks(hooks, units, where, recorder._record)
            yield recorder
    finally:
        recorder._batch_rows = None


# --------------------------------------------------------------------------------------
# run_capture: a whole loader, with labels and predictions
# --------------------------------------------------------------------------------------


@dataclass
class CaptureResult:
    """What :func:`run_capture` returns.

    Attributes:
        arrays: ``arrays[stat][unit_name]``, float32 ``(samples, out_channels)``.
        labels: int64 ``(samples,)``, the labels the loader gave.
        predictions: int64 ``(samples,)``, argmax of the model's output over dim 1.
        stats: The statistics recorded.
        where: Where unit outputs were read.
    """

    arrays: dict[str, dict[str, np.ndarray]]
    labels: np.ndarray
    predictions: np.ndarray
    stats: tuple[str, ...]
    where: str

    @property
    def num_samples(self) -> int:
        """Number of samples captured."""
        return int(self.labels.shape[0])



def _class_scores(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        raise UserInputError(
            "run_capture expects the model to return class scores of shape (batch, classes); "
            "wrap the model so that its first output is the logits."
        )
    return output


def _loader_length(loader: Iterable) -> int | None:
    sampler = getattr(loader, "sampler", None)
    try:
        return len(sampler) if sampler is not None else len(loader.dataset)  # type: ignore[attr-defined]
    except (TypeError, AttributeError):
        return None


def run_capture(
    model: nn.Module,
    units: Sequence[Unit],
    loader: Iterable,
    stats: Iterable[str] = ("mean",),
    *,
    where: str = DEFAULT_WHERE,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CaptureResult:
    """Run every batch of ``loader`` through ``model`` and capture the units' statistics.

    Runs under ``torch.no_grad()``; does not switch the model to eval mode (call
    ``model.eval()`` first) and does not move it (put it on ``device`` first).

    Args:
        model: The model, already on ``device``.
        units: Units from :func:`filterscope.find_units` on this model.
        loader: Yields ``(images, labels)`` batches, e.g. a ``torch.utils.data.DataLoader``.
        stats: Statistics to record, from :data:`STATISTICS`.
        where: ``"conv"``, ``"bn"`` or ``"post"``.
        device: Where the images are sent.
        progress: Show a tqdm progress bar.

    Returns:
        The arrays with the labels and predictions of the same samples.

    Raises:
        UserInputError: Bad arguments, a model not on ``device``, a loader that does not
            yield pairs, or a model whose output is not class scores.
    """
    device = check_model_device(model, device)
    labels, predictions = [], []
    with _capture(model, units, stats, where=where, num_samples=None, initial_rows=_loader_length(loader)) as recorder:
        with torch.no_grad():
            for batch in tqdm(loader, desc="capture", disable=not progress, leave=False):
                images, batch_labels = split_batch(batch)
                scores = _class_scores(model(images.to(device)))
                labels.append(batch_labels.reshape(-1).cpu().numpy().astype(np.int64))
                predictions.append(scores.argmax(dim=1).cpu().numpy().astype(np.int64))
    # Copies, so the result does not hold the recorder's larger buffers.
    arrays = {stat: {name: array.copy() for name, array in by_unit.items()} for stat, by_unit in recorder.arrays.items()}
    empty = np.zeros(0, dtype=np.int64)
    return CaptureResult(
        arrays=arrays,
        labels=np.concatenate(labels) if labels else empty,
        predictions=np.concatenate(predictions) if predictions else empty,
        stats=recorder.stats,
        where=where,
    )
