"""Evaluating networks pruned for one class, many masks per forward pass, without copying the model.

Each test batch is repeated once per mask along the batch dimension and each copy is masked by
its own mask (:func:`~filterscope.methods.semantic_pruning.masks.mask_hooks`), so no model is ever
copied and the caller's model is not changed (the hooks are removed when the pass ends).

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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...core.batches import split_batch
from ...core.errors import UserInputError
from ...core.hooks import Hooks
from ...core.units import Unit
from .masks import mask_hooks
from .residual import ResidualAccumulator, residual_hooks
from .selection import PruningMask

__all__ = ["FullNetworkReference", "MaskEvaluation", "binary_auc", "evaluate_masks", "full_network_reference"]


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
    accumulator = ResidualAccumulator(units, num_classes, device)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    logits_seen, labels_seen = [], []
    try:
        with Hooks() as hooks, torch.no_grad():
            residual_hooks(units, accumulator, hooks)
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


@dataclass
class _Tally:
    """What the masked passes keep: per mask a confusion matrix and the target class's logits; the labels once."""

    confusion: np.ndarray
    target_logits: list[list[np.ndarray]]
    labels_seen: list[np.ndarray] = field(default_factory=list)


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
    masked_units = _masked_units(units, masks)
    device, dtype = _model_device_dtype(model)
    total_masks = len(masks)
    tally = _Tally(np.zeros((total_masks, num_classes, num_classes), dtype=np.int64), [[] for _ in masks])
    accumulator = ResidualAccumulator(masked_units, total_masks, device) if residual else None
    targets_all = torch.tensor([mask.class_index for mask in masks], device=device)

    groups = [list(range(start, min(start + masks_per_pass, total_masks))) for start in range(0, total_masks, masks_per_pass)]
    for group_index, group in enumerate(tqdm(groups, desc="masks", disable=not progress, leave=False)):
        keep = _keep_masks([masks[m] for m in group], masked_units, dtype, device)
        try:
            with mask_hooks(masked_units, keep), Hooks() as hooks:
                if accumulator is not None:
                    residual_hooks(masked_units, accumulator, hooks)
                _masked_pass(model, loader, masks, group, targets_all[group], tally, accumulator, device,
                             keep_labels=group_index == 0)
        finally:
            if accumulator is not None:
                accumulator.rows = accumulator.row_masks = None
    labels_all = np.concatenate(tally.labels_seen) if tally.labels_seen else np.zeros(0, dtype=np.int64)

    residual_sums = {name: sums.cpu().numpy() for name, sums in accumulator.sums.items()} if accumulator else None
    if residual and baseline is None:
        baseline = full_network_reference(model, masked_units, loader, num_classes, progress=progress).response
    results = []
    for m, mask in enumerate(masks):
        residual_flags, fraction_residual, ratio = None, float("nan"), None
        if residual and baseline is not None and mask.class_index in baseline:
            residual_flags, fraction_residual, ratio = _residual_pruning(
                mask, {name: sums[m] for name, sums in residual_sums.items()}, baseline[mask.class_index],
                residual_tolerance,
            )
        scores = np.concatenate(tally.target_logits[m]) if tally.target_logits[m] else np.zeros(0)
        results.append(_evaluation(mask, tally.confusion[m], scores, labels_all, residual_flags, fraction_residual, ratio))
    return results


def _masked_units(units: Sequence[Unit], masks: Sequence[PruningMask]) -> list[Unit]:
    """The units the masks name, in the masks' order; one clear error for a unit not in ``units``."""
    unit_by_name = {unit.name: unit for unit in units}
    for mask in masks:
        missing = [name for name in mask.pruned if name not in unit_by_name]
        if missing:
            raise UserInputError(f"mask names units not in this model ({', '.join(missing[:3])}); pass find_units(model).")
    return [unit_by_name[name] for name in masks[0].pruned]


def _keep_masks(masks: Sequence[PruningMask], units: Sequence[Unit], dtype: torch.dtype,
                device: torch.device) -> dict[str, torch.Tensor]:
    """Per unit, ``(masks, filters)`` 0/1 keep flags of the masks, for :func:`mask_hooks`."""
    return {
        unit.name: torch.tensor(np.stack([~mask.pruned[unit.name] for mask in masks]), dtype=dtype, device=device)
        for unit in units
    }


def _masked_pass(model: nn.Module, loader: Iterable, masks: Sequence[PruningMask], group: list[int],
                 targets: torch.Tensor, tally: _Tally, accumulator: ResidualAccumulator | None,
                 device: torch.device, *, keep_labels: bool) -> None:
    """One pass over ``loader`` with each batch repeated once per mask of ``group`` (the mask hooks already on)."""
    copies = len(group)
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
                np.add.at(tally.confusion[m], (labels_np, predictions[j]), 1)
                tally.target_logits[m].append(logits[j, :, masks[m].class_index].float().cpu().numpy())
            if keep_labels:
                tally.labels_seen.append(labels_np)


def _residual_pruning(mask: PruningMask, masked_response: dict[str, np.ndarray], full_response: dict[str, np.ndarray],
                      tolerance: float) -> tuple[dict[str, np.ndarray], float, dict[str, np.ndarray]]:
    """RP of one mask: ``(flags per unit, share of all filters, ratio of masked to full response per unit)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = {name: np.where(full_response[name] > 0, masked_response[name] / full_response[name], np.nan)
                 for name in mask.pruned}
    flags = {
        name: ~pruned & (full_response[name] > 0) & (masked_response[name] <= tolerance * full_response[name])
        for name, pruned in mask.pruned.items()
    }
    fraction = sum(int(flag.sum()) for flag in flags.values()) / max(mask.num_filters, 1)
    return flags, fraction, ratio
