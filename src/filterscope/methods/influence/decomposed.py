"""The decomposed final layer: each class's logit computed from its own features only.

``logit_c = W[c, J_c] · I[J_c] + b_c``, where ``J_c`` is the class's set of influential features
(Badola et al., "Decomposing the Deep"). :class:`DecomposedLinear` holds, per class, only the
weights of its own features, so the final layer costs ``2 · Σ_c |J_c|`` FLOPs instead of
``2 · classes · features``. :func:`decompose` returns a new model whose final linear layer is
replaced by one (the caller's model is not changed); :func:`evaluate_decomposition` measures the
full and the decomposed model in one pass; :func:`retrain_head` fine-tunes a head on cached
features with the index sets fixed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ...core.batches import split_batch
from ...core.errors import UserInputError
from ...core.hooks import Hooks
from .final_layer import find_final_linear
from .passes import class_scores, first_and_every_batch

__all__ = [
    "DecomposedLinear",
    "DecompositionResult",
    "accuracy_of_head",
    "decompose",
    "evaluate_decomposition",
    "retrain_head",
]


def _index_sets(indices: Any, num_classes: int, num_features: int) -> list[list[int]]:
    """Validated index sets, one list per class."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    if isinstance(indices, dict):
        raise UserInputError("pass the index sets as a list (or array) in class order, not a dict.")
    sets = [[int(j) for j in np.asarray(row).reshape(-1)] for row in indices]
    if len(sets) != num_classes:
        raise UserInputError(
            f"there are {len(sets)} index sets but the final layer has {num_classes} classes; pass one set per class."
        )
    for label, row in enumerate(sets):
        bad = [j for j in row if not 0 <= j < num_features]
        if bad:
            raise UserInputError(
                f"the index set of class {label} holds {bad[0]}, outside [0, {num_features}); pass feature indices in range."
            )
        if len(set(row)) != len(row):
            raise UserInputError(f"the index set of class {label} repeats a feature; pass each feature once per class.")
    return sets


class DecomposedLinear(nn.Module):
    """A final layer that scores each class from its own features: ``logit_c = W[c, J_c] · I[J_c] + b_c``.

    Sets may have different sizes (padding positions carry a fixed zero weight). The selected
    weights are the module's parameters, so training it (with the sets fixed) only changes them.

    Args:
        weight: ``(classes, features)`` weight of the dense layer.
        bias: ``(classes,)`` bias, or ``None``.
        indices: One set of feature indices per class (a ``(classes, k)`` array or ragged lists).

    Raises:
        UserInputError: A set with an index out of range or repeated, or not one set per class.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, indices: Any):
        super().__init__()
        weight = weight.detach()
        num_classes, num_features = weight.shape
        sets = _index_sets(indices, num_classes, num_features)
        width = max((len(row) for row in sets), default=0)
        padded = torch.zeros(num_classes, width, dtype=torch.int64)
        mask = torch.zeros(num_classes, width, dtype=weight.dtype)
        for label, row in enumerate(sets):
            padded[label, : len(row)] = torch.tensor(row, dtype=torch.int64)
            mask[label, : len(row)] = 1
        self.in_features, self.out_features = int(num_features), int(num_classes)
        self.register_buffer("indices", padded.to(weight.device))
        self.register_buffer("mask", mask.to(weight.device))
        self.ragged = bool((mask == 0).any())
        self.weight = nn.Parameter(weight.gather(1, self.indices) * self.mask)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, indices: Any) -> "DecomposedLinear":
        """Decompose an ``nn.Linear`` (its weights are copied, it is not changed)."""
        return cls(linear.weight, linear.bias, indices)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        leading = features.shape[:-1]
        selected = features.reshape(-1, self.in_features)[:, self.indices]  # (rows, classes, k)
        weight = self.weight * self.mask if self.ragged else self.weight
        # A batched matrix product (not a multiply and a sum) so that FlopCounterMode counts it.
        logits = torch.einsum("rck,ck->rc", selected, weight).reshape(*leading, self.out_features)
        return logits + self.bias if self.bias is not None else logits

    def index_sets(self) -> list[list[int]]:
        """The feature indices of each class."""
        return [row[mask > 0].tolist() for row, mask in zip(self.indices.cpu(), self.mask.cpu())]

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``(classes, features)`` weight, zero outside each class's set."""
        dense = torch.zeros(self.out_features, self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        return dense.scatter_add(1, self.indices, (self.weight * self.mask).detach())

    def flops(self, rows: int = 1) -> int:
        """FLOPs for ``rows`` inputs, 2 per multiply-add as ``FlopCounterMode`` counts a linear layer.

        Equal to what ``FlopCounterMode`` measures when all sets have the same size; with ragged
        sets it measures the padded product, while this counts only the real weights.
        """
        return 2 * rows * int(self.mask.sum().item())

    def extra_repr(self) -> str:
        sizes = self.mask.sum(1).to(torch.int64).tolist()
        shown = f"{sizes[0]} per class" if len(set(sizes)) == 1 else f"{min(sizes)}-{max(sizes)} per class"
        return f"in_features={self.in_features}, out_features={self.out_features}, features={shown}"


def _parent_and_attribute(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attribute = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attribute


def decompose(model: nn.Module, indices: Any, *, input_size: Sequence[int] = (3, 32, 32),
              example_input: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` whose final linear layer is a :class:`DecomposedLinear` over ``indices``.

    The final layer is the last layer with parameters that runs in forward (found with hooks,
    see :func:`filterscope.methods.influence.final_layer.find_final_linear`). The caller's model is not changed.

    Args:
        model: A classifier ending in an ``nn.Linear`` layer.
        indices: One set of feature indices per class (e.g. ``InfluenceResult.indices``).
        input_size: ``(C, H, W)`` of one input, for the probe pass that finds the final layer.
        example_input: A batch to probe with instead.

    Returns:
        The new model, in the same training mode as ``model``.

    Raises:
        UserInputError: The model's last layer is not linear, or bad index sets.
    """
    final = find_final_linear(model, example_input if example_input is not None else input_size)
    layer = DecomposedLinear.from_linear(final.module, indices)
    copied = copy.deepcopy(model)
    parent, attribute = _parent_and_attribute(copied, final.name)
    setattr(parent, attribute, layer.to(final.module.weight.device))
    return copied


@dataclass
class DecompositionResult:
    """Full and decomposed accuracy from one pass.

    Attributes:
        accuracy_full: ``A_f``, top-1 accuracy of the model.
        accuracy_decomposed: ``A_d``, top-1 accuracy with the decomposed final layer.
        relative_accuracy: ``r_A = A_d / A_f``.
        flops_full: FLOPs of the dense final layer for one input.
        flops_decomposed: FLOPs of the decomposed final layer for one input.
        num_samples: Instances evaluated.
        per_class_full: Recall of each class, full model.
        per_class_decomposed: Recall of each class, decomposed.
    """

    accuracy_full: float
    accuracy_decomposed: float
    relative_accuracy: float
    flops_full: int
    flops_decomposed: int
    num_samples: int
    per_class_full: list[float]
    per_class_decomposed: list[float]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _recall(correct: np.ndarray, counts: np.ndarray) -> list[float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(v) for v in correct / counts]


def evaluate_decomposition(
    model: nn.Module,
    loader: Iterable,
    indices: Any,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DecompositionResult:
    """Accuracy of the full model and of its decomposition over ``indices``, in one pass.

    A forward pre-hook on the final linear layer (removed when the pass ends) hands its input to a
    :class:`DecomposedLinear`; the model itself is not changed nor switched to eval mode
    (call ``model.eval()`` first).

    Args:
        model: A classifier ending in an ``nn.Linear`` layer, on ``device``.
        loader: Yields ``(images, labels)``.
        indices: One set of feature indices per class.
        device: Where images are sent.
        progress: Show a progress bar.

    Returns:
        The :class:`DecompositionResult`.
    """
    first, batches = first_and_every_batch(loader, "decomposed eval", progress)
    final = find_final_linear(model, split_batch(first)[0][:1].to(device))
    layer = DecomposedLinear.from_linear(final.module, indices)
    num_classes = final.out_features
    slot: dict[str, torch.Tensor | None] = {}
    correct_full = np.zeros(num_classes)
    correct_decomposed = np.zeros(num_classes)
    counts = np.zeros(num_classes)
    with Hooks() as hooks, torch.no_grad():
        hooks.forward_pre(final.module, lambda module, inputs: slot.__setitem__("features", inputs[0]))
        for batch in batches:
            images, labels = split_batch(batch)
            labels = labels.reshape(-1).cpu()
            full = class_scores(model(images.to(device))).argmax(1).cpu()
            decomposed = layer(slot.pop("features")).argmax(1).cpu()
            counts += np.bincount(labels.numpy(), minlength=num_classes)
            correct_full += np.bincount(labels[full == labels].numpy(), minlength=num_classes)
            correct_decomposed += np.bincount(labels[decomposed == labels].numpy(), minlength=num_classes)
    total = max(counts.sum(), 1)
    accuracy_full, accuracy_decomposed = correct_full.sum() / total, correct_decomposed.sum() / total
    return DecompositionResult(
        accuracy_full=float(accuracy_full),
        accuracy_decomposed=float(accuracy_decomposed),
        relative_accuracy=float(accuracy_decomposed / accuracy_full) if accuracy_full > 0 else float("nan"),
        flops_full=2 * final.in_features * final.out_features,
        flops_decomposed=layer.flops(),
        num_samples=int(counts.sum()),
        per_class_full=_recall(correct_full, counts),
        per_class_decomposed=_recall(correct_decomposed, counts),
    )


def accuracy_of_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 8192) -> float:
    """Top-1 accuracy of a final layer on cached features ``(N, features)`` with labels ``(N,)``."""
    correct = 0
    with torch.no_grad():
        for start in range(0, features.shape[0], batch_size):
            logits = head(features[start : start + batch_size])
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(features.shape[0], 1)


def retrain_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Fine-tune a copy of a final layer on cached features (the backbone is fixed, so its features are).

    SGD with momentum and a cosine learning-rate decay over all steps, cross-entropy loss. For a
    :class:`DecomposedLinear` the index sets stay fixed: only the selected weights and the bias learn.

    Args:
        head: The final layer to train (copied; the argument is not changed).
        features: ``(N, features)`` training inputs of the final layer.
        labels: ``(N,)`` true labels.
        epochs: Passes over the features.
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        batch_size: Rows per step.
        seed: Seed of the shuffling.
        progress: Show a progress bar.

    Returns:
        ``(trained copy, history)``, history one ``{"epoch", "train_loss", "train_accuracy"}`` per epoch.
    """
    if epochs < 1:
        raise UserInputError(f"epochs must be at least 1, got {epochs}.")
    head = copy.deepcopy(head).train()
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = (features.shape[0] + batch_size - 1) // batch_size
    total_steps = max(epochs * steps_per_epoch, 1)
    history = []
    step = 0
    for epoch in tqdm(range(epochs), desc="retrain head", disable=not progress, leave=False):
        order = torch.randperm(features.shape[0], generator=generator)
        loss_sum = correct = 0.0
        for start in range(0, features.shape[0], batch_size):
            rows = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / total_steps))
            logits = head(features[rows])
            loss = F.cross_entropy(logits, labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(rows)
            correct += float((logits.argmax(1) == labels[rows]).sum())
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / features.shape[0],
                        "train_accuracy": correct / features.shape[0]})
    return head.eval(), history
