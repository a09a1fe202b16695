"""Per-channel statistics of each unit's output, captured with hooks that never outlive their use.

``with capture(model, units) as rec:`` registers forward hooks on the units' modules; every
batch that then goes through ``model`` is reduced, inside the hook, to one number per sample
and channel (spatial mean, sum, max or fraction of positive positions) and written into
preallocated ``(samples, channels)`` float32 arrays. Activation maps are never kept. The
hooks are removed in ``finally``, after success and after an error.

Where the statistics are read (``where``):

* ``"conv"``: the raw conv output.
* ``"bn"``: after the BatchNorm, before the activation (the conv output when the unit has
  no BatchNorm).
* ``"post"``: after the activation module. When the unit has no activation module, the
  BatchNorm (or conv) output is used; when the activation is a function call such as
  ``F.relu`` (``unit.activation_name == "<functional relu>"``) it cannot be hooked, and
  nothing is applied: the statistics are those of the BatchNorm output.

An activation module reused at several places (torchvision's ``self.relu``) is matched to
the unit by tensor identity: its call whose input is the unit's BatchNorm output.

None of these functions changes the model: no parameter, buffer or training flag. Call
``model.eval()`` first if you want inference-mode BatchNorm and dropout.

:func:`run_capture` runs a whole loader and also returns labels and predictions;
:func:`accumulate_by_class` streams per-class sums in fixed memory (and all-reduces them
under ``torch.distributed``).
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import UserInputError
from .hooks import Hooks
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
    "check_device",
    "register_unit_hooks",
]

#: Per-channel statistics of an activation map, over its spatial positions.
STATISTICS = ("mean", "sum", "max", "frac_positive")

#: Where a unit's output is read: raw conv output, after BatchNorm, after the activation.
WHERE = ("conv", "bn", "post")

_GROWTH_ROWS = 1024  # rows added at a time when the number of samples is not known


def channel_statistics(activation: torch.Tensor, stat: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reduce an activation map to one number per sample and channel.

    Args:
        activation: ``(batch, channels, height, width)`` (or any ``(batch, channels, ...)``).
        stat: One of :data:`STATISTICS`: ``"mean"``, ``"sum"`` or ``"max"`` over the spatial
            positions, or ``"frac_positive"``, the fraction of positions whose value is > 0.
        dtype: Floating dtype of the result (and of the accumulation for mean and sum).

    Returns:
        A ``(batch, channels)`` tensor on the activation's device.
    """
    flat = activation.detach().flatten(2)
    if stat == "mean":
        return flat.mean(dim=2, dtype=dtype)
    if stat == "sum":
        return flat.sum(dim=2, dtype=dtype)
    if stat == "max":
        return flat.amax(dim=2).to(dtype)
    if stat == "frac_positive":
        return (flat > 0).sum(dim=2, dtype=dtype) / flat.shape[2]
    raise UserInputError(f"unknown statistic {stat!r}; pass one of {', '.join(STATISTICS)}.")


# --------------------------------------------------------------------------------------
# Hooks shared by capture and accumulate_by_class
# --------------------------------------------------------------------------------------


def _check_arguments(model: nn.Module, units: Sequence[Unit], stats: Iterable[str], where: str) -> tuple[str, ...]:
    stats = (stats,) if isinstance(stats, str) else tuple(stats)
    unknown = [stat for stat in stats if stat not in STATISTICS]
    if unknown or not stats:
        raise UserInputError(f"unknown statistics {unknown or stats!r}; pass a tuple of {', '.join(STATISTICS)}.")
    if where not in WHERE:
        raise UserInputError(f"where must be one of {', '.join(WHERE)}, got {where!r}; pass where='post'.")
    if not units:
        raise UserInputError("no units to capture; pass the list returned by filterscope.find_units(model).")
    names = [unit.name for unit in units]
    if len(set(names)) != len(names):
        raise UserInputError("units contain the same name twice; pass each unit of find_units(model) once.")
    model_modules = {id(module) for module in model.modules()}
    for unit in units:
        if id(unit.conv) not in model_modules:
            raise UserInputError(
                f"unit {unit.name!r} does not belong to this model; call find_units on the model you capture from."
            )
    return stats


def register_unit_hooks(
    units: Sequence[Unit], where: str, on_activation: Callable[[Unit, torch.Tensor], None], hooks: Hooks | None = None
) -> list[torch.utils.hooks.RemovableHandle]:
    """Call ``on_activation(unit, tensor)`` with each unit's chosen output during forward passes.

    Returns the hook handles; the caller removes them (in ``finally``), or, when ``hooks`` is
    given, they are registered through it and removed with it.
    """
    handles = []

    def register(module: nn.Module, hook: Callable) -> None:
        handles.append(hooks.forward(module, hook) if hooks is not None else module.register_forward_hook(hook))
    # For "post" with an activation module: the unit's BatchNorm (or conv) output, held by a
    # weak reference so that no activation map is kept, waiting for the activation call that
    # reads exactly that tensor.
    pending: dict[str, weakref.ref] = {}
    units_by_activation: dict[int, list[Unit]] = defaultdict(list)
    activation_modules: dict[int, nn.Module] = {}

    def report_output(unit: Unit) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            on_activation(unit, output)

        return hook

    def remember_output(unit: Unit) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            pending[unit.name] = weakref.ref(output)

        return hook

    def match_activation(module_id: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            for unit in units_by_activation[module_id]:
                reference = pending.get(unit.name)
                if reference is not None and inputs and reference() is inputs[0]:
                    del pending[unit.name]
                    on_activation(unit, output)
                    return

        return hook

    for unit in units:
        pre_activation = unit.bn if unit.bn is not None else unit.conv
        if where == "conv":
            register(unit.conv, report_output(unit))
        elif where == "bn" or unit.activation is None:
            register(pre_activation, report_output(unit))
        else:
            register(pre_activation, remember_output(unit))
            units_by_activation[id(unit.activation)].append(unit)
            activation_modules[id(unit.activation)] = unit.activation
    for module_id, module in activation_modules.items():
        register(module, match_activation(module_id))
    return handles


def _remove(handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()


# --------------------------------------------------------------------------------------
# capture: per-sample rows
# --------------------------------------------------------------------------------------


class Recorder:
    """Per-sample, per-channel statistics of each unit, filled by :func:`capture`'s hooks.

    Attributes:
        stats: The statistics recorded.
        where: Where the unit outputs are read (see the module docstring).
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
    where: str = "post",
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
        where: ``"conv"``, ``"bn"`` or ``"post"`` (see the module docstring).
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
    stats = _check_arguments(model, units, stats, where)
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise UserInputError(f"num_samples must be a positive integer or None, got {num_samples!r}.")
    recorder = Recorder(units, stats, where, num_samples, initial_rows=initial_rows)
    handles = []
    try:
        handles.append(model.register_forward_pre_hook(lambda module, inputs: recorder._begin_batch()))
        handles.append(model.register_forward_hook(lambda module, inputs, output: recorder._end_batch()))
        handles += register_unit_hooks(units, where, recorder._record)
        yield recorder
    finally:
        _remove(handles)
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


def check_device(model: nn.Module, device: str | torch.device) -> torch.device:
    device = torch.device(device)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != device.type or (
            device.index is not None and tensor.device.index is not None and tensor.device.index != device.index
        ):
            raise UserInputError(
                f"the model is on {tensor.device} but device={str(device)!r}; move it first with model.to({str(device)!r})."
            )
        break
    return device


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise UserInputError("the loader must yield (images, labels) pairs; wrap the data set so that it does.")
    images, labels = batch[0], batch[1]
    return images, torch.as_tensor(labels)


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
    where: str = "post",
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
    device = check_device(model, device)
    labels, predictions = [], []
    with _capture(model, units, stats, where=where, num_samples=None, initial_rows=_loader_length(loader)) as recorder:
        with torch.no_grad():
            for batch in tqdm(loader, desc="capture", disable=not progress, leave=False):
                images, batch_labels = _split_batch(batch)
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


# --------------------------------------------------------------------------------------
# accumulate_by_class: streaming per-class sums
# --------------------------------------------------------------------------------------


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


def accumulate_by_class(
    model: nn.Module,
    units: Sequence[Unit],
    loader: Iterable,
    num_classes: int,
    stat: str = "sum",
    *,
    where: str = "post",
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
        stat: The statistic summed, from :data:`STATISTICS` (``"sum"`` gives the
            accumulated response of semantic pruning).
        where: ``"conv"``, ``"bn"`` or ``"post"``.
        device: Where the images (and the sums) live.
        progress: Show a tqdm progress bar.

    Returns:
        ``{unit_name: float64 (num_classes, out_channels) sums, "__counts__": int64
        (num_classes,) samples per class}``. Divide a unit's sums by the counts for class means.

    Raises:
        UserInputError: Bad arguments, a model not on ``device``, or a label outside
            ``[0, num_classes)``.
    """
    (stat,) = _check_arguments(model, units, (stat,), where)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer, got {num_classes!r}.")
    device = check_device(model, device)
    accumulator = _ClassAccumulator(units, num_classes, stat, device)
    handles = []
    try:
        handles += register_unit_hooks(units, where, accumulator.add)
        with torch.no_grad():
            for batch in tqdm(loader, desc="accumulate", disable=not progress, leave=False):
                images, labels = _split_batch(batch)
                labels = labels.reshape(-1).to(device=device, dtype=torch.int64)
                if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                    bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
                    raise UserInputError(
                        f"label {bad} is outside [0, {num_classes}); pass the data set's number of classes as num_classes."
                    )
                accumulator.labels = labels
                model(images.to(device))
                accumulator.counts += torch.bincount(labels, minlength=num_classes)
    finally:
        _remove(handles)
        accumulator.labels = None

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in [*accumulator.sums.values(), accumulator.counts]:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)

    result = {name: sums.cpu().numpy() for name, sums in accumulator.sums.items()}
    result["__counts__"] = accumulator.counts.cpu().numpy()
    return result
