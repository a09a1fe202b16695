"""Semantic pruning for single-class interpretability (ICLR 2020 submission), without retraining.

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
* ``"post"`` (the default): after the activation, i.e. what the next layer actually receives.
  It is never negative; a filter with zero accumulated response is never active on the class.
  Units whose activation comes only after a residual addition (``conv2`` of an option-A
  ResNet block) have no activation of their own, and their ``"post"`` output is the
  BatchNorm output (signed), so network-wise ranking puts those filters with a negative sum
  first. ``benchmarks/results/semantic_resnet.md`` compares the three on the shared ResNet-20
  (same ratios, NWP and LWP, mean over classes): ``"post"`` keeps the most overall accuracy at
  θ = 0.05 (0.535, against 0.480 for ``"bn"`` and 0.370 for ``"conv"``) and the most target
  recall at θ = 0.05 and 0.5; at larger θ all three collapse alike. ``"conv"`` is also the
  least meaningful for "0-score": 73 % of the (class, filter) sums are ``<= 0`` only because
  BatchNorm will subtract the channel mean.

A pruning is a boolean mask per unit (True = filter pruned). Filters are ranked by their
accumulated response for the class, lowest first, either over the whole network
(network-wise, ``"nwp"``) or within each unit (layer-wise, ``"lwp"``), and the ``θ`` share with
the lowest response is pruned. Settings (:func:`parse_setting`): a ratio ``θ ∈ [0, 1]``, the
paper's ``"0-score"`` (prune every filter whose accumulated response is ``<= 0``) and
``"median"`` (prune the filters below the median, network-wise or per unit).

A pruned filter's output is set to zero where it leaves its unit: at the BatchNorm output (the
conv output for a unit without BatchNorm), before the activation and before any residual
addition — exactly what physically removing the filter and its BatchNorm channel does
(:mod:`filterscope.methods.semantic_pruning.export`). Masks are applied by forward hooks that multiply
each unit's output by a per-sample channel mask; :func:`evaluate_masks` evaluates many masks at
once by repeating each test batch once per mask along the batch dimension, so no model is
ever copied and the caller's model is not changed (the hooks are removed in ``finally``).

**Direct and residual pruning.** Direct pruning (DP) is the mask itself. Residual pruning (RP)
is the filters that DP did not remove but whose output for the class becomes zero because
their inputs were removed: their mean response over the class's evaluation images is zero
under the DP mask while it is not zero in the full network. A filter's response here is its
post-activation output when the unit has its own activation (zero after a ReLU means never
active) and its raw conv output otherwise (zero only when every input it reads is zero) —
a BatchNorm output is never zero, since BatchNorm adds its shift. RP is measured in the same
pass that evaluates the masks.

**Evaluation.** For the target class ``c`` of each pruned network: recall (the paper's
"class accuracy"), precision, the one-vs-rest AUC of the class logit, and overall accuracy —
a network that predicts ``c`` everywhere has recall 1 and precision 0.1 on CIFAR-10.

Example::

    model.eval()
    units = find_units(model, (3, 32, 32))
    response = accumulate_responses(model, units, train_loader, num_classes=10)
    mask = select_pruned(response, class_index=3, setting=0.25, mode="lwp")
    [evaluation] = evaluate_masks(model, units, test_loader, [mask], num_classes=10)
    evaluation.recall, evaluation.precision, evaluation.auc, evaluation.accuracy
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...core.capture import WHERE, _register_unit_hooks, _remove, accumulate_by_class
from ...core.errors import UserInputError
from ...core.batches import split_batch
from ...core.units import Unit

__all__ = [
    "DEFAULT_RATIOS",
    "MODES",
    "NAMED_SETTINGS",
    "AccumulatedResponse",
    "FullNetworkReference",
    "MaskEvaluation",
    "PruningMask",
    "SemanticPruningConfig",
    "accumulate_responses",
    "analyze_checkpoint",
    "binary_auc",
    "evaluate_masks",
    "full_network_reference",
    "mask_hooks",
    "overlap",
    "overlap_matrices",
    "parse_setting",
    "response_pca",
    "resolve_class",
    "select_pruned",
    "sweep",
]

#: Pruning modes: network-wise (all filters ranked together) and layer-wise (each unit alone).
MODES = ("nwp", "lwp")

#: The paper's discrete settings besides a plain ratio.
NAMED_SETTINGS = ("0-score", "median")

#: The default continuous sweep: θ = 0, 0.05, …, 0.6.
DEFAULT_RATIOS = tuple(round(0.05 * step, 2) for step in range(13))


# --------------------------------------------------------------------------------------
# Accumulated responses
# --------------------------------------------------------------------------------------


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
    where: str = "post",
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
        where: ``"conv"``, ``"bn"`` or ``"post"`` (see the module docstring).
        classes: Class names, kept with the result.
        device: Where the model runs.
        progress: Show a progress bar.

    Returns:
        The per-class sums and image counts.
    """
    if where not in WHERE:
        raise UserInputError(f"where must be one of {', '.join(WHERE)}, got {where!r}; pass where='post'.")
    sums = accumulate_by_class(model, units, loader, num_classes, "sum", where=where, device=device, progress=progress)
    counts = sums.pop("__counts__")
    return AccumulatedResponse({unit.name: sums[unit.name] for unit in units}, counts, where,
                               list(classes) if classes is not None else None)


# --------------------------------------------------------------------------------------
# Selecting the filters to prune
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Evaluating many masks without copying the model
# --------------------------------------------------------------------------------------


def _mask_point(unit: Unit) -> nn.Module:
    return unit.bn if unit.bn is not None else unit.conv


@contextlib.contextmanager
def mask_hooks(units: Sequence[Unit], keep: dict[str, torch.Tensor]) -> Iterator[None]:
    """Zero the pruned channels of each unit's output (BatchNorm output, or conv output without BatchNorm).

    ``keep[name]`` is ``(masks, channels)`` of 0/1 values: a batch of ``masks · B`` samples is
    read as ``masks`` consecutive groups of ``B``, and in group ``m`` the channels where row
    ``m`` is 0 are set to zero. A ``(channels,)`` mask applies to every sample. The write is in
    place (inference only), so hooks registered later on the same module see the masked
    tensor. The hooks are removed when the block ends, after an error too.

    Args:
        units: The units to mask (units absent from ``keep`` are left alone).
        keep: Per-unit keep masks on the model's device.
    """
    handles = []

    def hook_for(mask: torch.Tensor):
        rows = mask.reshape(-1, mask.shape[-1])
        groups = rows.shape[0]
        # Only the pruned channels are written (a fill, no read), instead of multiplying every
        # channel by its 0/1 mask: one full pass over each masked activation map less, which is
        # most of what masking costs on narrow networks (measured on ResNet-56).
        pruned = [(group, torch.nonzero(row == 0).flatten()) for group, row in enumerate(rows)]
        pruned = [(group, channels) for group, channels in pruned if channels.numel()]

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shaped = output.view(groups, output.shape[0] // groups, output.shape[1], -1)
            for group, channels in pruned:
                shaped[group].index_fill_(1, channels, 0.0)

        return hook

    try:
        for unit in units:
            if unit.name in keep:
                handles.append(_mask_point(unit).register_forward_hook(hook_for(keep[unit.name])))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class MaskEvaluation:
    """How a network pruned for one class does on the evaluation split.

    Attributes:
        class_index, setting, mode: Which mask.
        fraction_direct: Share of all filters pruned directly (DP).
        fraction_residual: Share of all filters residually pruned (RP); NaN when not measured.
        direct_per_unit, residual_per_unit: The same per unit.
        recall: Accuracy on the target class's images (the paper's class accuracy).
        precision: Share of the images predicted as the target class that belong to it (NaN if none).
        auc: One-vs-rest ROC AUC of the target class's logit.
        accuracy: Overall top-1 accuracy.
        per_class_recall: Recall of every class under this mask.
        predicted_share: Share of all images predicted as the target class.
        emptied_units: Units that lost every filter; ``dead`` is True when there are any.
        confusion: ``(classes, classes)`` counts, rows true, columns predicted.
        residual_ratio: ``{unit: float (filters,)}``, each filter's summed |response| over the
            class's images under the mask divided by the same in the full network (NaN where
            the full network's is zero); None when RP was not measured. RP counts ratio 0 (or
            ``<= residual_tolerance`` of :func:`evaluate_masks`).
    """

    class_index: int
    setting: float | str
    mode: str
    fraction_direct: float
    fraction_residual: float
    direct_per_unit: dict[str, float]
    residual_per_unit: dict[str, float]
    recall: float
    precision: float
    auc: float
    accuracy: float
    per_class_recall: list[float]
    predicted_share: float
    emptied_units: list[str]
    confusion: np.ndarray = field(repr=False)
    residual_ratio: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def dead(self) -> bool:
        return bool(self.emptied_units)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_index": self.class_index, "setting": self.setting, "mode": self.mode,
            "fraction_direct": self.fraction_direct, "fraction_residual": self.fraction_residual,
            "recall": self.recall, "precision": self.precision, "auc": self.auc, "accuracy": self.accuracy,
            "predicted_share": self.predicted_share, "per_class_recall": self.per_class_recall,
            "direct_per_unit": self.direct_per_unit, "residual_per_unit": self.residual_per_unit,
            "dead": self.dead, "emptied_units": self.emptied_units,
        }


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels (Mann-Whitney, ties count half).

    Returns NaN when one of the two groups is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    num_positive, num_negative = int(positive.sum()), int((~positive).sum())
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average rank (1-based) of each distinct value.
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - num_positive * (num_positive + 1) / 2.0) / (num_positive * num_negative))


class _ResidualAccumulator:
    """Per mask, the sum over its target class's images of each filter's |response|.

    Rows of a repeated batch that belong to mask ``m``'s target class are picked out once per
    batch, so only about one row in ``classes`` is reduced.
    """

    def __init__(self, units: Sequence[Unit], num_masks: int, device: torch.device):
        self.sums = {unit.name: torch.zeros((num_masks, unit.out_channels), dtype=torch.float64, device=device) for unit in units}
        self.rows: torch.Tensor | None = None  # indices into the repeated batch
        self.row_masks: torch.Tensor | None = None  # which mask (global index) each row belongs to

    def add(self, unit: Unit, activation: torch.Tensor) -> None:
        if self.rows is None or self.rows.numel() == 0:
            return
        picked = activation.detach().flatten(2).index_select(0, self.rows)
        self.sums[unit.name].index_add_(0, self.row_masks, picked.abs().sum(dim=2, dtype=torch.float64))


def _residual_hooks(units: Sequence[Unit], accumulator: _ResidualAccumulator) -> list:
    # A filter's response for RP: post-activation where the unit has its own activation module,
    # raw conv output otherwise (BatchNorm output is never exactly zero).
    with_activation = [unit for unit in units if unit.activation is not None]
    without = [unit for unit in units if unit.activation is None]
    handles = []
    if with_activation:
        handles += _register_unit_hooks(with_activation, "post", accumulator.add)
    if without:
        handles += _register_unit_hooks(without, "conv", accumulator.add)
    return handles




def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()


@dataclass
class FullNetworkReference:
    """The unpruned network on the evaluation split, measured once for every class.

    Attributes:
        response: ``{class_index: {unit_name: float64 (filters,)}}``, each filter's summed
            |response| (post-activation, or raw conv output for a unit without its own
            activation) over the class's images: RP's reference.
        confusion: ``(classes, classes)`` counts.
        logits: ``(samples, classes)`` float32 scores, in loader order.
        labels: ``(samples,)`` labels.
    """

    response: dict[int, dict[str, np.ndarray]]
    confusion: np.ndarray = field(repr=False)
    logits: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)

    def evaluation(self, mask: PruningMask) -> MaskEvaluation:
        """The :class:`MaskEvaluation` of a mask that prunes nothing, for its class."""
        if mask.num_pruned:
            raise ValueError("the full-network reference only stands for masks that prune nothing.")
        return _evaluation(mask, self.confusion, self.logits[:, mask.class_index], self.labels,
                           {name: np.zeros(array.size) for name, array in mask.pruned.items()}, 0.0)


def full_network_reference(
    model: nn.Module, units: Sequence[Unit], loader: Iterable, num_classes: int, *, progress: bool = True
) -> FullNetworkReference:
    """One pass of the unpruned network: its scores and every filter's summed |response| per class.

    The model must be in eval mode; it is not changed and the hooks are removed afterwards.
    """
    device, _ = _model_device_dtype(model)
    accumulator = _ResidualAccumulator(units, num_classes, device)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    logits_seen, labels_seen = [], []
    handles = []
    try:
        handles = _residual_hooks(units, accumulator)
        with torch.no_grad():
            for batch in tqdm(loader, desc="full network", disable=not progress, leave=False):
                images, labels = split_batch(batch)
                labels = labels.reshape(-1).to(device)
                accumulator.rows = torch.arange(labels.shape[0], device=device)
                accumulator.row_masks = labels
                logits = model(images.to(device))
                labels_np = labels.cpu().numpy()
                np.add.at(confusion, (labels_np, logits.argmax(1).cpu().numpy()), 1)
                logits_seen.append(logits.float().cpu().numpy())
                labels_seen.append(labels_np)
    finally:
        _remove(handles)
        accumulator.rows = accumulator.row_masks = None
    sums = {name: array.cpu().numpy() for name, array in accumulator.sums.items()}
    response = {c: {name: sums[name][c] for name in sums} for c in range(num_classes)}
    return FullNetworkReference(response, confusion, np.concatenate(logits_seen), np.concatenate(labels_seen))


def _evaluation(mask: PruningMask, counts: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                residual_per_unit: dict[str, np.ndarray] | None, fraction_residual: float,
                residual_ratio: dict[str, np.ndarray] | None = None) -> MaskEvaluation:
    c = mask.class_index
    predicted_c, true_c = int(counts[:, c].sum()), int(counts[c].sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = (np.diag(counts) / counts.sum(1)).tolist()
    return MaskEvaluation(
        class_index=c, setting=mask.setting, mode=mask.mode,
        fraction_direct=mask.fraction, fraction_residual=fraction_residual,
        direct_per_unit=mask.per_unit_fraction,
        residual_per_unit={name: float(array.mean()) if array.size else 0.0 for name, array in (residual_per_unit or {}).items()},
        recall=float(counts[c, c] / true_c) if true_c else float("nan"),
        precision=float(counts[c, c] / predicted_c) if predicted_c else float("nan"),
        auc=binary_auc(scores, labels == c) if scores.size == labels.size else float("nan"),
        accuracy=float(np.trace(counts) / max(counts.sum(), 1)),
        per_class_recall=[float(value) for value in per_class],
        predicted_share=predicted_c / max(int(counts.sum()), 1),
        emptied_units=mask.emptied_units, confusion=counts, residual_ratio=residual_ratio,
    )


def evaluate_masks(
    model: nn.Module,
    units: Sequence[Unit],
    loader: Iterable,
    masks: Sequence[PruningMask],
    num_classes: int,
    *,
    masks_per_pass: int = 8,
    residual: bool = True,
    baseline: dict[int, dict[str, np.ndarray]] | None = None,
    residual_tolerance: float = 0.0,
    progress: bool = True,
) -> list[MaskEvaluation]:
    """Evaluate networks pruned by ``masks`` on ``loader``, several masks per forward pass.

    Each batch of ``B`` images is repeated ``k`` times (``k <= masks_per_pass``) along the batch
    dimension and group ``m`` is masked by mask ``m``; the loader is read once per group of
    ``masks_per_pass`` masks. Only small sums are kept: a confusion matrix and the target
    class's logit per mask (for the AUC), and, with ``residual``, each filter's summed
    |response| over the target class's images. The model must be in eval mode; it is not
    changed and every hook is removed afterwards.

    Args:
        model: The trained CNN (eval mode).
        units: Units of ``model``; the masks' unit names must be among them.
        loader: Evaluation images and labels (the same order on every pass).
        masks: From :func:`select_pruned`.
        num_classes: Number of classes.
        masks_per_pass: How many masks share one forward pass.
        residual: Measure residual pruning (RP).
        baseline: ``FullNetworkReference.response`` of this model and loader (RP's reference);
            measured here with one more pass when None and ``residual`` is set.
        residual_tolerance: A filter not pruned directly counts as residually pruned when its
            response for the class under the mask is at most this share of its full-network
            response (0: exactly zero, the paper's definition).
        progress: Show a progress bar.

    Returns:
        One :class:`MaskEvaluation` per mask, in order.
    """
    if not masks:
        return []
    if masks_per_pass < 1:
        raise UserInputError(f"masks_per_pass must be at least 1, got {masks_per_pass}.")
    unit_by_name = {unit.name: unit for unit in units}
    for mask in masks:
        missing = [name for name in mask.pruned if name not in unit_by_name]
        if missing:
            raise UserInputError(f"mask names units not in this model ({', '.join(missing[:3])}); pass find_units(model).")
    masked_units = [unit_by_name[name] for name in masks[0].pruned]
    device, dtype = _model_device_dtype(model)

    total_masks = len(masks)
    confusion = np.zeros((total_masks, num_classes, num_classes), dtype=np.int64)
    target_logits: list[list[np.ndarray]] = [[] for _ in masks]
    labels_seen: list[np.ndarray] = []
    accumulator = _ResidualAccumulator(masked_units, total_masks, device) if residual else None
    targets_all = torch.tensor([mask.class_index for mask in masks], device=device)

    groups = [list(range(start, min(start + masks_per_pass, total_masks))) for start in range(0, total_masks, masks_per_pass)]
    bar = tqdm(total=len(groups), desc="masks", disable=not progress, leave=False)
    for group_index, group in enumerate(groups):
        keep = {
            unit.name: torch.tensor(np.stack([~masks[m].pruned[unit.name] for m in group]), dtype=dtype, device=device)
            for unit in masked_units
        }
        targets = targets_all[group]
        copies = len(group)
        handles = []
        try:
            with mask_hooks(masked_units, keep):
                if accumulator is not None:
                    handles = _residual_hooks(masked_units, accumulator)
                with torch.no_grad():
                    for batch in loader:
                        images, labels = split_batch(batch)
                        images, labels = images.to(device), labels.reshape(-1).to(device)
                        size = images.shape[0]
                        if accumulator is not None:
                            # rows of group member j whose label is j's target class
                            match = labels.unsqueeze(0) == targets.unsqueeze(1)  # (copies, B)
                            local, sample = match.nonzero(as_tuple=True)
                            accumulator.rows = local * size + sample
                            accumulator.row_masks = torch.tensor(group, device=device)[local]
                        repeated = images.repeat(copies, *([1] * (images.dim() - 1)))
                        logits = model(repeated)
                        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                            raise UserInputError("the model must return (batch, classes) scores.")
                        logits = logits.view(copies, size, -1)
                        predictions = logits.argmax(dim=2).cpu().numpy()
                        labels_np = labels.cpu().numpy()
                        for j, m in enumerate(group):
                            np.add.at(confusion[m], (labels_np, predictions[j]), 1)
                            target_logits[m].append(logits[j, :, masks[m].class_index].float().cpu().numpy())
                        if group_index == 0:
                            labels_seen.append(labels_np)
        finally:
            _remove(handles)
            if accumulator is not None:
                accumulator.rows = accumulator.row_masks = None
        bar.update(1)
    bar.close()
    labels_all = np.concatenate(labels_seen) if labels_seen else np.zeros(0, dtype=np.int64)

    residual_sums = {name: sums.cpu().numpy() for name, sums in accumulator.sums.items()} if accumulator else None
    if residual and baseline is None:
        baseline = full_network_reference(model, masked_units, loader, num_classes, progress=progress).response

    results = []
    for m, mask in enumerate(masks):
        c = mask.class_index
        residual_flags, fraction_residual, ratio = None, float("nan"), None
        if residual and baseline is not None and c in baseline:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = {name: np.where(baseline[c][name] > 0, residual_sums[name][m] / baseline[c][name], np.nan)
                         for name in mask.pruned}
            residual_flags = {
                name: ~pruned & (baseline[c][name] > 0) & (residual_sums[name][m] <= residual_tolerance * baseline[c][name])
                for name, pruned in mask.pruned.items()
            }
            fraction_residual = sum(int(flags.sum()) for flags in residual_flags.values()) / max(mask.num_filters, 1)
        scores = np.concatenate(target_logits[m]) if target_logits[m] else np.zeros(0)
        results.append(_evaluation(mask, confusion[m], scores, labels_all, residual_flags, fraction_residual, ratio))
    return results


# --------------------------------------------------------------------------------------
# Interference between classes
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The sweep and the checkpoint entry point
# --------------------------------------------------------------------------------------


@dataclass
class SemanticPruningConfig:
    """What a semantic-pruning sweep does.

    Attributes:
        modes: Pruning modes, from :data:`MODES`.
        settings: Ratios θ and named settings (``"0-score"``, ``"median"``).
        classes: Class names or indices to prune for; None for every class.
        where: Where responses are read for the ranking (``"post"``, ``"bn"`` or ``"conv"``).
        exclude: Unit names never pruned.
        masks_per_pass: Masks evaluated together in one forward pass.
        residual: Measure residual pruning.
    """

    modes: tuple[str, ...] = ("nwp", "lwp")
    settings: tuple[Any, ...] = DEFAULT_RATIOS
    classes: tuple[Any, ...] | None = None
    where: str = "post"
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


def analyze_checkpoint(
    model_name: str,
    weights: str | None,
    data: str,
    config: SemanticPruningConfig | None = None,
    *,
    response_split: str = "train",
    eval_split: str = "test",
    val_fraction: float = 0.0,
    batch_size: int = 256,
    device: str = "cpu",
    run_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Accumulated responses on ``response_split``, then the sweep evaluated on ``eval_split``.

    With ``run_dir``, writes ``metrics.json["semantic_pruning"]``,
    ``arrays/semantic_response.npz`` and ``figures/semantic_*.png``.

    Returns:
        ``{"model", "data", "where", "classes", "results": [per class, mode and setting: fractions
        DP and RP, recall, precision, AUC, accuracy, dead]}``.
    """
    from torch.utils.data import DataLoader

    from ...core.units import find_units
    from ...analyses.workload import load_workload

    config = config or SemanticPruningConfig()
    config.validate()
    workload = load_workload(model_name, weights, data, (response_split, eval_split), val_fraction=val_fraction,
                             batch_size=batch_size, device=device)
    model, spec, torch_device = workload.model, workload.spec, workload.device
    response_set, eval_set = workload.splits[response_split], workload.splits[eval_split]
    classes = workload.classes
    if config.classes is not None:  # fail on a bad class before the long pass
        for value in config.classes:
            resolve_class(value, classes, len(classes))
    units = find_units(model, tuple(spec.input_shape))
    unknown = [name for name in config.exclude if name not in {unit.name for unit in units}]
    if unknown:
        raise UserInputError(f"unknown units to exclude: {', '.join(unknown)}; see `filterscope units --model {model_name}`.")
    response = accumulate_responses(model, units, DataLoader(response_set, batch_size=batch_size), len(classes),
                                    where=config.where, classes=classes, device=torch_device, progress=progress)
    evaluations = sweep(model, units, response, DataLoader(eval_set, batch_size=max(1, batch_size // config.masks_per_pass)),
                        config, progress=progress)
    rows = []
    for evaluation in evaluations:
        row = evaluation.to_dict()
        row["class"] = classes[evaluation.class_index]
        row.pop("direct_per_unit")
        row.pop("residual_per_unit")
        row.pop("per_class_recall")
        rows.append(row)
    summary = {"model": model_name, "weights": weights, "data": str(data), "where": config.where,
               "response_split": response_split, "eval_split": eval_split, "classes": classes, "results": rows}
    if run_dir is not None:
        _write_run(run_dir, response, evaluations, summary, units)
    return summary


def _write_run(run_dir: str, response: AccumulatedResponse, evaluations: list[MaskEvaluation],
               summary: dict[str, Any], units: Sequence[Unit]) -> None:
    from ...report import figures_semantic as figures
    from ...io.run_dir import RunDir

    run = RunDir(run_dir)
    response.save(run.arrays / "semantic_response.npz")
    run.update_metrics("semantic_pruning", summary)
    figures.plot_class_curves(evaluations, response.classes, run.figures / "semantic_curves.png")
    figures.plot_direct_residual(evaluations, [unit.name for unit in units], run.figures / "semantic_dp_rp.png")
