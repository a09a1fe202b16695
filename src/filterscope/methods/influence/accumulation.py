"""Algorithm 1's streaming pass: per class, how often each feature is among an instance's top-``k1``.

For every instance, the ``k1`` features with the largest ℓ1 norm are taken (a pooled feature's
absolute value; a feature map's spatial ℓ1 norm); over the instances of each class these indices
are counted. The features are read, by default, at the input of the model's final linear layer;
any unit's post-activation output can be used instead.

One pass (:func:`accumulate_influence`) reduces a data set to small sums, vectorised per batch (a
sort and a ``bincount``, no per-image Python loop), and never holds the features of the whole
data set:

* ``counts[c, j]``: how often feature ``j`` was among the top-``k1`` of an instance of class ``c``;
* ``class_sums[c, j]``: the sum of feature ``j`` (pooled value) over class ``c``'s instances;
* ``feature_sum``/``feature_sum_squares``: per-feature moments (for the noise ablation);
* ``class_counts`` and the full model's number of correct predictions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.batches import split_batch
from ...core.devices import check_model_device as check_device
from ...core.unit_hooks import register_unit_hooks
from ...core.errors import UserInputError
from ...core.hooks import Hooks
from ...core.units import find_units, probe_mode
from .final_layer import FINAL, find_final_linear
from .passes import class_scores, first_and_every_batch

__all__ = [
    "LABEL_SOURCES",
    "InfluenceAccumulator",
    "InfluenceStatistics",
    "accumulate_influence",
    "top_k_indices",
]

#: Whose labels define "the instances of a class": the data's labels or the model's predictions.
LABEL_SOURCES = ("true", "predicted")


def top_k_indices(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values of every row; among equal values the lower index comes first.

    A stable descending sort rather than ``torch.topk``, whose order among ties is unspecified:
    post-ReLU features are often exactly zero, and the index sets must not depend on that.

    Args:
        magnitude: ``(rows, features)``.
        k: How many per row, ``1 <= k <= features``.

    Returns:
        ``(rows, k)`` int64 indices, largest value first.
    """
    return torch.sort(magnitude, dim=1, descending=True, stable=True).indices[:, :k]


@dataclass
class InfluenceStatistics:
    """What one pass of Algorithm 1 accumulates over a data set (all small, all sums).

    Attributes:
        counts: int64 ``(classes, features)``; ``counts[c, j]`` is the number of instances of class
            ``c`` that had feature ``j`` among their top-``k1``.
        class_sums: float64 ``(classes, features)``; sum of each (pooled) feature over each class.
        class_counts: int64 ``(classes,)`` instances per class (by the chosen labels).
        feature_sum: float64 ``(features,)`` sum of each feature over all instances.
        feature_sum_squares: float64 ``(features,)`` sum of its squares.
        num_correct: instances whose model prediction equals the data's label (0 when unknown).
        k1: features counted per instance.
        at: where the features were read (``"final"`` or a unit name).
        labels: ``"true"`` or ``"predicted"``.
        final_layer: qualified name of the model's final linear layer (when ``at == "final"``).
    """

    counts: np.ndarray
    class_sums: np.ndarray
    class_counts: np.ndarray
    feature_sum: np.ndarray
    feature_sum_squares: np.ndarray
    num_correct: int
    k1: int
    at: str = FINAL
    labels: str = "true"
    final_layer: str | None = None

    @property
    def num_samples(self) -> int:
        """Instances seen."""
        return int(self.class_counts.sum())

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.counts.shape[1])

    @property
    def class_means(self) -> np.ndarray:
        """``(classes, features)`` mean feature value per class (NaN rows for empty classes)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.class_sums / self.class_counts[:, None]

    @property
    def feature_mean(self) -> np.ndarray:
        """``(features,)`` mean of each feature over all instances."""
        return self.feature_sum / max(self.num_samples, 1)

    @property
    def feature_std(self) -> np.ndarray:
        """``(features,)`` population standard deviation of each feature over all instances."""
        mean = self.feature_mean
        variance = self.feature_sum_squares / max(self.num_samples, 1) - mean**2
        return np.sqrt(np.clip(variance, 0.0, None))

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy of the full model on the pass's data (against the data's labels)."""
        return self.num_correct / max(self.num_samples, 1)


class InfluenceAccumulator:
    """Adds batches of features to the sums of Algorithm 1 (see :class:`InfluenceStatistics`).

    Usable on its own, e.g. on features cached once and reused for a grid of ``k1``::

        accumulator = InfluenceAccumulator(num_classes=10, num_features=64, k1=5)
        for features, labels in batches:
            accumulator.add(features, labels)
        statistics = accumulator.statistics()

    Args:
        num_classes: Number of classes (labels lie in ``[0, num_classes)``).
        num_features: Feature width (channels).
        k1: Features counted per instance, ``1 <= k1 <= num_features``.
        device: Where the sums live (that of the features).
        at: Recorded in the statistics.
        labels: Recorded in the statistics.
        final_layer: Recorded in the statistics.
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int,
        k1: int,
        *,
        device: str | torch.device = "cpu",
        at: str = FINAL,
        labels: str = "true",
        final_layer: str | None = None,
    ):
        _check_k("k1", k1, num_features, at)
        self.num_classes, self.num_features, self.k1 = num_classes, num_features, k1
        self.at, self.labels, self.final_layer = at, labels, final_layer
        self.counts = torch.zeros(num_classes * num_features, dtype=torch.int64, device=device)
        self.class_sums = torch.zeros(num_classes, num_features, dtype=torch.float64, device=device)
        self.class_counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.feature_sum = torch.zeros(num_features, dtype=torch.float64, device=device)
        self.feature_sum_squares = torch.zeros(num_features, dtype=torch.float64, device=device)
        self.num_correct = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, features: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor | None = None,
            predictions: torch.Tensor | None = None) -> None:
        """Add one batch.

        Args:
            features: ``(batch, features)`` pooled features or ``(batch, features, H, W)`` maps.
            labels: ``(batch,)`` class of each instance used for the histogram (true or predicted).
            true_labels: The data's labels, to count correct predictions (with ``predictions``).
            predictions: The model's predicted classes.
        """
        features = features.detach()
        if features.dim() > 2:
            flat = features.flatten(2)
            magnitude = flat.abs().sum(2)  # spatial ℓ1 norm of each map
            pooled = flat.mean(2, dtype=torch.float64)
        else:
            magnitude = features.abs()
            pooled = features.double()
        if features.shape[1] != self.num_features:
            raise UserInputError(
                f"a batch has {features.shape[1]} features but {self.num_features} were expected; pass features "
                "read at one place of one model."
            )
        labels = labels.reshape(-1).to(device=features.device, dtype=torch.int64)
        top = top_k_indices(magnitude, self.k1)
        flat_index = (labels[:, None] * self.num_features + top).reshape(-1)
        self.counts += torch.bincount(flat_index, minlength=self.num_classes * self.num_features)
        self.class_sums.index_add_(0, labels, pooled)
        self.class_counts += torch.bincount(labels, minlength=self.num_classes)
        self.feature_sum += pooled.sum(0)
        self.feature_sum_squares += (pooled * pooled).sum(0)
        if true_labels is not None and predictions is not None:
            self.num_correct += (predictions.reshape(-1) == true_labels.reshape(-1).to(predictions.device)).sum()

    def statistics(self) -> InfluenceStatistics:
        """The sums so far (all-reduced over processes under ``torch.distributed``)."""
        tensors = [self.counts, self.class_sums, self.class_counts, self.feature_sum, self.feature_sum_squares,
                   self.num_correct]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            tensors = [tensor.clone() for tensor in tensors]
            for tensor in tensors:
                torch.distributed.all_reduce(tensor)
        counts, class_sums, class_counts, feature_sum, feature_sum_squares, num_correct = (t.cpu() for t in tensors)
        return InfluenceStatistics(
            counts=counts.view(self.num_classes, self.num_features).numpy(),
            class_sums=class_sums.numpy(),
            class_counts=class_counts.numpy(),
            feature_sum=feature_sum.numpy(),
            feature_sum_squares=feature_sum_squares.numpy(),
            num_correct=int(num_correct),
            k1=self.k1,
            at=self.at,
            labels=self.labels,
            final_layer=self.final_layer,
        )


def _check_k(name: str, k: Any, num_features: int, at: str) -> None:
    where = "the final layer's input" if at == FINAL else f"unit {at!r}"
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= num_features:
        raise UserInputError(
            f"{name}={k!r} is outside [1, {num_features}], the {num_features} features at {where}; "
            f"pass {name} between 1 and {num_features}."
        )


@contextlib.contextmanager
def _feature_hook(model: nn.Module, at: str, example_input: torch.Tensor) -> Iterator[tuple[dict, int, int]]:
    """Hook that puts the features of each forward pass into ``slot["features"]``; removed when the block ends.

    Yields:
        ``(slot, num_features, num_classes, final_layer_name_or_None)``.
    """
    slot: dict[str, torch.Tensor | None] = {"features": None}
    with Hooks() as hooks:
        if at == FINAL:
            final = find_final_linear(model, example_input)

            def keep_input(module: nn.Module, inputs: tuple) -> None:
                slot["features"] = inputs[0].detach()

            hooks.forward_pre(final.module, keep_input)
            num_features, num_classes, final_name = final.in_features, final.out_features, final.name
        else:
            units = find_units(model, tuple(example_input.shape[1:]))
            by_name = {unit.name: unit for unit in units}
            if at not in by_name:
                shown = ", ".join(list(by_name)[-5:])
                raise UserInputError(
                    f"the model has no unit named {at!r}; pass at='final' or the name of a unit (e.g. one of {shown})."
                )
            with probe_mode(model):
                output = model(example_input)
            output = output[0] if isinstance(output, (tuple, list)) else output
            num_features, num_classes, final_name = by_name[at].out_channels, int(output.shape[-1]), None

            def keep_map(unit: Any, activation: torch.Tensor) -> None:
                slot["features"] = activation.detach()

            register_unit_hooks(hooks, [by_name[at]], "post", keep_map)
        yield slot, num_features, num_classes, final_name


def accumulate_influence(
    model: nn.Module,
    loader: Iterable,
    *,
    k1: int,
    labels: str = "true",
    at: str = FINAL,
    k2: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> InfluenceStatistics:
    """One streaming pass of Algorithm 1 over ``loader``.

    Runs under ``torch.no_grad()``. The model is neither changed nor switched to eval mode
    (call ``model.eval()`` first, and use a loader without augmentation); hooks are removed
    after success and after an error.

    Args:
        model: A classifier ending in an ``nn.Linear`` layer, already on ``device``.
        loader: Yields ``(images, labels)`` batches.
        k1: Features counted per instance.
        labels: ``"true"`` (the data's labels) or ``"predicted"`` (the model's argmax).
        at: ``"final"`` for the input of the final linear layer, or a unit name (its post-activation maps).
        k2: When given, also checked against the feature width before the pass.
        device: Where images are sent.
        progress: Show a progress bar.

    Returns:
        The :class:`InfluenceStatistics`.

    Raises:
        UserInputError: ``k1`` out of range, unknown ``labels`` or unit, a model without a final
            linear layer, an empty loader or labels outside the model's classes.
    """
    if labels not in LABEL_SOURCES:
        raise UserInputError(f"labels must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}; pass labels='true'.")
    device = check_device(model, device)
    first, batches = first_and_every_batch(loader, f"influence k1={k1}", progress)
    first_images, _ = split_batch(first)
    example = first_images[:1].to(device)
    accumulator = None
    with _feature_hook(model, at, example) as (slot, num_features, num_classes, final_name), torch.no_grad():
        accumulator = InfluenceAccumulator(
            num_classes, num_features, k1, device=device, at=at, labels=labels, final_layer=final_name
        )
        if k2 is not None:
            _check_k("k2", k2, num_features, at)
        for batch in batches:
            images, true_labels = split_batch(batch)
            true_labels = true_labels.reshape(-1).to(device=device, dtype=torch.int64)
            if true_labels.numel() and (int(true_labels.min()) < 0 or int(true_labels.max()) >= num_classes):
                raise UserInputError(
                    f"a label lies outside [0, {num_classes}), the model's classes; pass data with the classes the model was trained on."
                )
            slot["features"] = None
            predictions = class_scores(model(images.to(device))).argmax(1)
            features = slot["features"]
            if features is None:
                raise UserInputError(f"the features at {at!r} were not computed in a forward pass; pass at='final'.")
            slot["features"] = None
            accumulator.add(features, predictions if labels == "predicted" else true_labels, true_labels, predictions)
    return accumulator.statistics()
