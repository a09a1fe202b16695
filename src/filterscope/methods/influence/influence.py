"""Class-specific influential features (Badola et al., "Decomposing the Deep", Algorithm 1).

For every instance, the ``k1`` features with the largest ℓ1 norm are taken (a pooled feature's
absolute value; a feature map's spatial ℓ1 norm); over the instances of each class these
indices are counted, and the ``k2`` most frequent features of a class are its *influential
features* ``J_c`` (ties go to the lower index). The features are read, by default, at the input
of the model's final linear layer; any unit's post-activation output can be used instead.

One streaming pass (:func:`accumulate_influence`) reduces a data set to small sums, vectorised
per batch (a sort and a ``bincount``, no per-image Python loop), and never holds the features
of the whole data set:

* ``counts[c, j]``: how often feature ``j`` was among the top-``k1`` of an instance of class ``c``;
* ``class_sums[c, j]``: the sum of feature ``j`` (pooled value) over class ``c``'s instances;
* ``feature_sum``/``feature_sum_squares``: per-feature moments (for the noise ablation);
* ``class_counts`` and the full model's number of correct predictions.

Index sets are then chosen by a *criterion* from the registry :data:`CRITERIA`:

* ``"l1"`` (the paper): rank features of class ``c`` by ``counts[c]``;
* ``"contribution"`` (beyond the paper): rank them by their mean contribution to the class
  logit, ``mean_c(I_j) · W[c, j]``, which needs the final layer's weight.

The module also holds the analyses that only look at the index sets: the Gaussian-noise
ablation (the paper's Table 8), the pairwise Jaccard overlap of the classes' sets and a binned
estimate of the mutual information between features and classes.

Example::

    model.eval()
    result = find_influential_features(model, train_loader, InfluenceConfig(k1=5, k2=5))
    result.indices            # (classes, k2) feature indices, row c is J_c
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...core.atomic import atomic_file
from ...core.errors import UserInputError
from ...core.batches import split_batch

__all__ = [
    "CRITERIA",
    "analyze_checkpoint",
    "LABEL_SOURCES",
    "FinalLayer",
    "InfluenceAccumulator",
    "InfluenceConfig",
    "InfluenceResult",
    "InfluenceStatistics",
    "accumulate_influence",
    "criterion_scores",
    "evaluate_with_noise",
    "feature_maps",
    "find_final_linear",
    "find_influential_features",
    "jaccard_overlap",
    "mutual_information",
    "noise_ablation",
    "register_criterion",
    "replace_with_noise",
    "run",
    "select_top",
    "top_k_indices",
]

#: Whose labels define "the instances of a class": the data's labels or the model's predictions.
LABEL_SOURCES = ("true", "predicted")

#: ``at`` value for the input of the final linear layer (any other value names a unit).
FINAL = "final"


# --------------------------------------------------------------------------------------
# Finding the final linear layer
# --------------------------------------------------------------------------------------


@dataclass
class FinalLayer:
    """The model's final linear layer, found by running the model once.

    Attributes:
        name: Qualified name of the module in the model (``"linear"``, ``"fc"``, ``"classifier.6"``).
        module: The ``nn.Linear`` itself (the caller's module, not a copy).
    """

    name: str
    module: nn.Linear = field(repr=False)

    @property
    def in_features(self) -> int:
        """Width of the features the layer reads."""
        return self.module.in_features

    @property
    def out_features(self) -> int:
        """Number of classes the layer scores."""
        return self.module.out_features


def _leaf_modules_with_parameters(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]


def find_final_linear(model: nn.Module, example_input: torch.Tensor | Sequence[int] = (3, 32, 32)) -> FinalLayer:
    """Find the layer that computes the model's class scores: the last layer with parameters called in forward.

    The model runs once on ``example_input`` (or a random batch-1 input of that ``(C, H, W)``
    size) in eval mode without gradients; forward hooks on every module that owns parameters
    record the order of the calls and are removed afterwards, and every training flag is restored.
    The layer is found by what runs, never by an attribute name.

    Args:
        model: Any classifier.
        example_input: A batch of inputs, or the ``(channels, height, width)`` of one input.

    Returns:
        The :class:`FinalLayer`.

    Raises:
        UserInputError: The last layer with parameters is not an ``nn.Linear`` (its type and name
            are given), its output is not the model's output width, or it reads features of
            more than one dimension.
    """
    from ...core.units import probe_input, probe_mode

    if not isinstance(example_input, torch.Tensor):
        example_input = probe_input(model, tuple(example_input))
    calls: list[tuple[str, nn.Module, torch.Size]] = []
    handles = []

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            shape = inputs[0].shape if inputs and isinstance(inputs[0], torch.Tensor) else torch.Size()
            calls.append((name, module, shape))

        return hook

    try:
        for name, module in _leaf_modules_with_parameters(model):
            handles.append(module.register_forward_hook(record(name)))
        with probe_mode(model):
            output = model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise UserInputError(
            f"{type(model).__name__} ran no layer with parameters; pass a trained classifier that ends in an nn.Linear layer."
        )
    name, module, input_shape = calls[-1]
    if not isinstance(module, nn.Linear):
        raise UserInputError(
            f"the last layer of {type(model).__name__} is {type(module).__name__} {name!r}, not nn.Linear; "
            "pass a model whose class scores come from a final nn.Linear layer (e.g. global pooling, then nn.Linear)."
        )
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if isinstance(output, torch.Tensor) and output.dim() >= 2 and output.shape[-1] != module.out_features:
        raise UserInputError(
            f"the last linear layer {name!r} has {module.out_features} outputs but the model returns "
            f"{output.shape[-1]} scores; pass a model whose output is the final nn.Linear layer's output."
        )
    if len(input_shape) != 2:
        raise UserInputError(
            f"the final linear layer {name!r} reads inputs of shape {tuple(input_shape)}, not (batch, features); "
            "pass a model that flattens its features before the final nn.Linear layer."
        )
    return FinalLayer(name, module)


# --------------------------------------------------------------------------------------
# Algorithm 1: the streaming statistics
# --------------------------------------------------------------------------------------


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
    """Hook that puts the features of each forward pass into ``slot["features"]``; removed in ``finally``.

    Yields:
        ``(slot, num_features, num_classes, final_layer_name_or_None)``.
    """
    slot: dict[str, torch.Tensor | None] = {"features": None}
    handles = []
    try:
        if at == FINAL:
            final = find_final_linear(model, example_input)

            def keep_input(module: nn.Module, inputs: tuple) -> None:
                slot["features"] = inputs[0].detach()

            handles.append(final.module.register_forward_pre_hook(keep_input))
            num_features, num_classes, final_name = final.in_features, final.out_features, final.name
        else:
            from ...core.capture import _register_unit_hooks
            from ...core.units import find_units, probe_mode

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

            handles += _register_unit_hooks([by_name[at]], "post", keep_map)
        yield slot, num_features, num_classes, final_name
    finally:
        for handle in handles:
            handle.remove()




def _scores(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


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
    from ...core.capture import _check_device

    if labels not in LABEL_SOURCES:
        raise UserInputError(f"labels must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}; pass labels='true'.")
    device = _check_device(model, device)
    batches = iter(tqdm(loader, desc=f"influence k1={k1}", disable=not progress, leave=False))
    first = next(batches, None)
    if first is None:
        raise UserInputError("the loader yielded no batches; pass a data split with images.")
    first_images, _ = split_batch(first)
    example = first_images[:1].to(device)
    accumulator = None
    with _feature_hook(model, at, example) as (slot, num_features, num_classes, final_name), torch.no_grad():
        accumulator = InfluenceAccumulator(
            num_classes, num_features, k1, device=device, at=at, labels=labels, final_layer=final_name
        )
        if k2 is not None:
            _check_k("k2", k2, num_features, at)
        for batch in _chain(first, batches):
            images, true_labels = split_batch(batch)
            true_labels = true_labels.reshape(-1).to(device=device, dtype=torch.int64)
            if true_labels.numel() and (int(true_labels.min()) < 0 or int(true_labels.max()) >= num_classes):
                raise UserInputError(
                    f"a label lies outside [0, {num_classes}), the model's classes; pass data with the classes the model was trained on."
                )
            slot["features"] = None
            predictions = _scores(model(images.to(device))).argmax(1)
            features = slot["features"]
            if features is None:
                raise UserInputError(f"the features at {at!r} were not computed in a forward pass; pass at='final'.")
            slot["features"] = None
            accumulator.add(features, predictions if labels == "predicted" else true_labels, true_labels, predictions)
    return accumulator.statistics()


def _chain(first: Any, rest: Iterator) -> Iterator:
    yield first
    yield from rest


# --------------------------------------------------------------------------------------
# Criteria: which features of a class are influential
# --------------------------------------------------------------------------------------

#: A criterion maps the statistics (and the final layer's weight, ``(classes, features)``, or
#: None) to ``(classes, features)`` scores; the ``k2`` highest of each row are the class's set.
Criterion = Callable[[InfluenceStatistics, "np.ndarray | None"], np.ndarray]

CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Decorator that adds a selection criterion to :data:`CRITERIA` under ``name``."""

    def decorate(criterion: Criterion) -> Criterion:
        if name in CRITERIA:
            raise ValueError(f"criterion {name!r} is registered twice")
        CRITERIA[name] = criterion
        return criterion

    return decorate


@register_criterion("l1")
def l1_frequency(statistics: InfluenceStatistics, weight: np.ndarray | None = None) -> np.ndarray:
    """The paper's criterion: how often a feature was among an instance's top-``k1`` by ℓ1 norm."""
    return statistics.counts.astype(np.float64)


@register_criterion("contribution")
def mean_contribution(statistics: InfluenceStatistics, weight: np.ndarray | None = None) -> np.ndarray:
    """Mean contribution of feature ``j`` to the logit of class ``c`` over class ``c``: ``mean_c(I_j) · W[c, j]``."""
    if weight is None or statistics.at != FINAL:
        raise UserInputError(
            "the contribution criterion needs the final layer's weight and features read at its input; "
            "pass at='final' (or use criterion='l1')."
        )
    if weight.shape != statistics.counts.shape:
        raise UserInputError(
            f"the weight has shape {weight.shape} but the statistics cover {statistics.counts.shape} "
            "(classes, features); pass the final layer's weight of the same model."
        )
    return statistics.class_means * np.asarray(weight, dtype=np.float64)


def select_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring columns of every row, highest first; ties go to the lower index.

    Args:
        scores: ``(classes, features)``.
        k: How many per row.

    Returns:
        ``(classes, k)`` int64 indices.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int64)


def criterion_scores(statistics: InfluenceStatistics, criterion: str = "l1", weight: np.ndarray | None = None) -> np.ndarray:
    """``(classes, features)`` scores of a registered criterion.

    Raises:
        UserInputError: An unknown criterion, or a class with no instances.
    """
    if criterion not in CRITERIA:
        raise UserInputError(f"unknown criterion {criterion!r}; choose one of: {', '.join(sorted(CRITERIA))}.")
    _check_every_class_seen(statistics)
    return CRITERIA[criterion](statistics, weight)


def _check_every_class_seen(statistics: InfluenceStatistics, classes: Sequence[str] | None = None) -> None:
    empty = np.flatnonzero(statistics.class_counts == 0)
    if len(empty):
        label = int(empty[0])
        name = f"{classes[label]!r} (label {label})" if classes is not None and label < len(classes) else f"label {label}"
        by = "true labels" if statistics.labels == "true" else "the model's predictions"
        raise UserInputError(
            f"class {name} has no instances in the data (by {by}), so it has no influential features; "
            "pass data with at least one image of every class."
        )


# --------------------------------------------------------------------------------------
# The analysis: run(model, loader, config) -> InfluenceResult
# --------------------------------------------------------------------------------------


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
        """Write ``arrays/influence_indices.npz`` into a run directory (a path or :class:`~filterscope.RunDir`).

        Returns:
            ``{"arrays": path}``.
        """
        from ...io.run_dir import RunDir

        run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        target = run.arrays / "influence_indices.npz"
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
    _check_every_class_seen(statistics, names)
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


# --------------------------------------------------------------------------------------
# Gaussian-noise ablation (the paper's Table 8)
# --------------------------------------------------------------------------------------


def replace_with_noise(
    features: torch.Tensor,
    columns: Sequence[int] | np.ndarray,
    mean: np.ndarray | torch.Tensor,
    std: np.ndarray | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A copy of ``features`` whose ``columns`` are drawn from ``N(mean[j], std[j])`` per feature.

    Args:
        features: ``(batch, features)``.
        columns: Feature indices to replace.
        mean: ``(features,)`` mean of each feature over the data.
        std: ``(features,)`` standard deviation of each feature over the data.
        generator: Random generator (for repeatable draws).

    Returns:
        The new ``(batch, features)`` tensor.
    """
    columns = torch.as_tensor(np.asarray(columns, dtype=np.int64), device=features.device)
    result = features.clone()
    if columns.numel() == 0:
        return result
    mean = torch.as_tensor(np.asarray(mean), dtype=features.dtype, device=features.device)[columns]
    std = torch.as_tensor(np.asarray(std), dtype=features.dtype, device=features.device)[columns]
    noise = torch.randn((features.shape[0], columns.numel()), generator=generator, dtype=features.dtype)
    result[:, columns] = mean + std * noise.to(features.device)
    return result


def noise_ablation(
    features: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module,
    influential: Sequence[int] | np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    repeats: int = 5,
    seed: int = 0,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Accuracy of ``head`` when the influential features, or as many non-influential ones, are noise.

    The influential features are replaced by Gaussian noise with each feature's own mean and
    standard deviation; in a second condition the same number of features drawn at random from
    the others is replaced instead (all of them, if there are fewer). Each condition is repeated
    with ``repeats`` seeds.

    Args:
        features: ``(N, features)`` inputs of the final layer (e.g. cached test features).
        labels: ``(N,)`` true labels.
        head: The final layer (``nn.Linear`` or a decomposed one).
        influential: Feature indices to replace (e.g. the union of all classes' sets).
        mean: ``(features,)`` per-feature mean (from the training data).
        std: ``(features,)`` per-feature standard deviation.
        repeats: Noise draws (and random non-influential choices) per condition.
        seed: Base seed.
        batch_size: Rows per evaluation step.

    Returns:
        ``{"accuracy_clean", "accuracy_influential_noised", "accuracy_noninfluential_noised"
        (means over repeats), "..._runs" (lists), "num_replaced", "num_noninfluential_replaced",
        "influential", "num_features"}``.
    """
    num_features = features.shape[1]
    influential = np.unique(np.asarray(influential, dtype=np.int64))
    others = np.setdiff1d(np.arange(num_features), influential)
    count_other = min(len(influential), len(others))

    def accuracy(columns: np.ndarray | None, generator: torch.Generator | None) -> float:
        correct = 0
        with torch.no_grad():
            for start in range(0, features.shape[0], batch_size):
                chunk = features[start : start + batch_size]
                if columns is not None:
                    chunk = replace_with_noise(chunk, columns, mean, std, generator)
                correct += int((head(chunk).argmax(1) == labels[start : start + batch_size]).sum())
        return correct / max(features.shape[0], 1)

    influential_runs, other_runs = [], []
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(seed * 1000 + repeat)
        influential_runs.append(accuracy(influential, generator))
        chosen = np.sort(np.random.default_rng(seed * 1000 + repeat).choice(others, count_other, replace=False))
        other_runs.append(accuracy(chosen, generator))
    return {
        "accuracy_clean": accuracy(None, None),
        "accuracy_influential_noised": float(np.mean(influential_runs)),
        "accuracy_noninfluential_noised": float(np.mean(other_runs)),
        "accuracy_influential_noised_runs": influential_runs,
        "accuracy_noninfluential_noised_runs": other_runs,
        "num_replaced": int(len(influential)),
        "num_noninfluential_replaced": int(count_other),
        "influential": [int(j) for j in influential],
        "num_features": int(num_features),
        "repeats": repeats,
    }


def evaluate_with_noise(
    model: nn.Module,
    loader: Iterable,
    columns: Sequence[int] | np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> float:
    """Streaming version of the ablation on a whole model: top-1 accuracy with ``columns`` of the
    final layer's input replaced by per-feature Gaussian noise (a forward pre-hook, removed in ``finally``).

    Returns:
        The accuracy in [0, 1].
    """
    generator = torch.Generator().manual_seed(seed)
    correct = seen = 0
    handle = None
    batches = iter(tqdm(loader, desc="noise ablation", disable=not progress, leave=False))
    first = next(batches, None)
    if first is None:
        raise UserInputError("the loader yielded no batches; pass a data split with images.")
    final = find_final_linear(model, split_batch(first)[0][:1].to(device))

    def noised(module: nn.Module, inputs: tuple) -> tuple:
        return (replace_with_noise(inputs[0], columns, mean, std, generator), *inputs[1:])

    try:
        handle = final.module.register_forward_pre_hook(noised)
        with torch.no_grad():
            for batch in _chain(first, batches):
                images, labels = split_batch(batch)
                predictions = _scores(model(images.to(device))).argmax(1).cpu()
                correct += int((predictions == labels.reshape(-1)).sum())
                seen += len(predictions)
    finally:
        if handle is not None:
            handle.remove()
    return correct / max(seen, 1)


def feature_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The spatial maps behind the final layer's input features, for the views of the paper's Table 7.

    The maps are the last output of a module, before the final linear layer runs, that has
    shape ``(batch, features, H, W)`` with ``H · W > 1`` (in a CIFAR ResNet, the last block's
    output, whose global average is the final layer's input). Hooks are removed in ``finally``;
    the model runs under ``torch.no_grad()`` in its current mode.

    Args:
        model: A classifier ending in an ``nn.Linear`` layer.
        images: ``(batch, C, H, W)``.

    Returns:
        ``(batch, features, h, w)`` maps.

    Raises:
        UserInputError: No module output of that shape runs before the final layer.
    """
    final = find_final_linear(model, images[:1])
    width = final.in_features
    found: dict[str, torch.Tensor | None] = {"maps": None, "done": None}
    handles = []

    def keep(module: nn.Module, inputs: tuple, output: Any) -> None:
        if found["done"] is None and isinstance(output, torch.Tensor) and output.dim() == 4:
            if output.shape[1] == width and output.shape[2] * output.shape[3] > 1:
                found["maps"] = output.detach().clone()

    def stop(module: nn.Module, inputs: tuple) -> None:
        found["done"] = True

    try:
        for module in model.modules():
            if module is not final.module and not list(module.children()):
                handles.append(module.register_forward_hook(keep))
        handles.append(final.module.register_forward_pre_hook(stop))
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    if found["maps"] is None:
        raise UserInputError(
            f"no module of {type(model).__name__} outputs (batch, {width}, H, W) maps before the final layer "
            f"{final.name!r}; feature maps can only be shown for models that pool maps into the final layer's input."
        )
    return found["maps"]


# --------------------------------------------------------------------------------------
# Views: overlap of the index sets, mutual information
# --------------------------------------------------------------------------------------


def jaccard_overlap(indices: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Pairwise Jaccard overlap ``|J_a ∩ J_b| / |J_a ∪ J_b|`` of the classes' index sets.

    Args:
        indices: One index set per class (a ``(classes, k)`` array or ragged lists).

    Returns:
        float64 ``(classes, classes)``, 1 on the diagonal (0 where both sets are empty).
    """
    sets = [set(int(j) for j in row) for row in indices]
    size = len(sets)
    overlap = np.zeros((size, size), dtype=np.float64)
    for a in range(size):
        for b in range(size):
            union = len(sets[a] | sets[b])
            overlap[a, b] = len(sets[a] & sets[b]) / union if union else 0.0
    return overlap


def mutual_information(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int,
    *,
    bins: int = 16,
) -> dict[str, np.ndarray]:
    """Binned (plug-in) estimate of the mutual information between each feature and the class, in bits.

    Each feature is cut into ``bins`` equal-frequency bins (quantiles over the given data; tied
    values, such as the zeros of a ReLU feature, share one bin), and the mutual information is
    computed from the joint histogram of bin and class. The estimate is biased upwards by about
    ``(bins - 1)(classes - 1) / (2 N ln 2)`` bits, which is small for tens of thousands of samples.

    Args:
        features: ``(N, features)``.
        labels: ``(N,)`` integer classes in ``[0, num_classes)``.
        num_classes: Number of classes.
        bins: Bins per feature.

    Returns:
        ``{"overall": (features,) I(feature; class), "per_class": (classes, features)
        I(feature; [class == c]) one-vs-rest}``.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_samples, num_features = features.shape
    quantiles = np.quantile(features, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # (bins-1, features)
    binned = np.stack([np.searchsorted(quantiles[:, j], features[:, j], side="right") for j in range(num_features)], 1)
    # joint[j, b, c]: samples with feature j in bin b and class c.
    flat = (np.arange(num_features)[None, :] * bins + binned) * num_classes + labels[:, None]
    joint = np.bincount(flat.ravel(), minlength=num_features * bins * num_classes).reshape(num_features, bins, num_classes)
    joint = joint / max(num_samples, 1)

    def information(table: np.ndarray) -> np.ndarray:  # table: (features, bins, outcomes), sums to 1 per feature
        bin_marginal = table.sum(2, keepdims=True)
        class_marginal = table.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = table * np.log2(table / (bin_marginal * class_marginal))
        return np.nansum(terms, axis=(1, 2))

    overall = information(joint)
    per_class = np.empty((num_classes, num_features))
    for c in range(num_classes):
        inside = joint[:, :, c]
        per_class[c] = information(np.stack([inside, joint.sum(2) - inside], axis=2))
    return {"overall": overall, "per_class": per_class}


# --------------------------------------------------------------------------------------
# From registered names to numbers and a run directory (what ``filterscope influence`` calls)
# --------------------------------------------------------------------------------------


def analyze_checkpoint(
    model_name: str,
    weights: str | None,
    data: str,
    config: InfluenceConfig | None = None,
    *,
    index_split: str = "train",
    eval_split: str = "test",
    val_fraction: float = 0.0,
    batch_size: int = 256,
    device: str = "cpu",
    run_dir: str | None = None,
    map_images: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Index sets from ``index_split``, then full and decomposed accuracy on ``eval_split``.

    Builds the registered model, loads ``weights``, finds the index sets with one pass over
    ``index_split`` (no augmentation, evaluation mode) and evaluates the full and the decomposed
    model in one pass over ``eval_split``. With ``run_dir``, writes ``metrics.json["influence"]``,
    ``arrays/influence_indices.npz`` and ``figures/influence_*.png``.

    Returns:
        ``{"indices": {class: [features]}, "accuracy_full", "accuracy_decomposed",
        "relative_accuracy", "flops_final_full", "flops_final_decomposed", ...}``.
    """
    from torch.utils.data import DataLoader

    from .decomposed import evaluate_decomposition
    from ...analyses.workload import load_workload

    config = config or InfluenceConfig()
    config.validate()
    workload = load_workload(model_name, weights, data, (index_split, eval_split), val_fraction=val_fraction,
                             batch_size=batch_size, device=device)
    model, torch_device = workload.model, workload.device
    index_set, eval_set = workload.splits[index_split], workload.splits[eval_split]
    index_loader = DataLoader(index_set, batch_size=batch_size, shuffle=False)
    result = find_influential_features(model, index_loader, config, device=torch_device, progress=progress)
    summary: dict[str, Any] = {"model": model_name, "weights": weights, "data": str(data),
                               "index_split": index_split, "eval_split": eval_split, **result.to_dict()}
    if config.at == FINAL:
        evaluation = evaluate_decomposition(
            model, DataLoader(eval_set, batch_size=batch_size, shuffle=False), result.indices,
            device=torch_device, progress=progress,
        )
        summary.update({
            "accuracy_full": evaluation.accuracy_full,
            "accuracy_decomposed": evaluation.accuracy_decomposed,
            "relative_accuracy": evaluation.relative_accuracy,
            "flops_final_full": evaluation.flops_full,
            "flops_final_decomposed": evaluation.flops_decomposed,
            "per_class_full": evaluation.per_class_full,
            "per_class_decomposed": evaluation.per_class_decomposed,
            "num_eval_samples": evaluation.num_samples,
        })
    if run_dir is not None:
        _write_run(run_dir, result, summary, model, eval_set, map_images, torch_device)
    return summary


def _write_run(run_dir: str, result: InfluenceResult, summary: dict[str, Any], model: nn.Module, eval_set: Any,
               map_images: int, device: torch.device) -> None:
    from ...report import figures_influence as figures
    from ...io.run_dir import RunDir

    run = RunDir(run_dir)
    result.save(run)
    figures.draw_counts(result.statistics.counts, result.indices, result.classes, run.figures / "influence_counts.png")
    figures.draw_jaccard(jaccard_overlap(result.indices), result.classes, run.figures / "influence_jaccard.png")
    if map_images > 0 and result.config.at == FINAL:
        chosen = np.concatenate([np.flatnonzero(eval_set.targets == c)[:map_images] for c in range(len(result.classes))])
        images = torch.stack([eval_set[int(i)][0] for i in chosen]).to(device)
        try:
            maps = feature_maps(model, images).cpu().numpy()
        except UserInputError:
            maps = None
        if maps is not None:
            k2 = result.indices.shape[1]
            non_influential = select_top(-result.scores, k2)  # the least influential, as many
            figures.draw_influence_maps(eval_set.images[chosen], maps, eval_set.targets[chosen], result.indices,
                                        non_influential, result.classes, run.figures / "influence_maps.png")
    run.update_metrics("influence", summary)
