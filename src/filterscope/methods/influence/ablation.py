"""The Gaussian-noise ablation (the paper's Table 8): accuracy when chosen features are noise.

The influential features are replaced by Gaussian noise with each feature's own mean and
standard deviation (from the training data), and, for comparison, as many non-influential
features are replaced instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.batches import split_batch
from ...core.hooks import Hooks
from .final_layer import find_final_linear
from .passes import class_scores, first_and_every_batch

__all__ = ["evaluate_with_noise", "noise_ablation", "replace_with_noise"]


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
    first, batches = first_and_every_batch(loader, "noise ablation", progress)
    final = find_final_linear(model, split_batch(first)[0][:1].to(device))

    def noised(module: nn.Module, inputs: tuple) -> tuple:
        return (replace_with_noise(inputs[0], columns, mean, std, generator), *inputs[1:])

    with Hooks() as hooks, torch.no_grad():
        hooks.forward_pre(final.module, noised)
        for batch in batches:
            images, labels = split_batch(batch)
            predictions = class_scores(model(images.to(device))).argmax(1).cpu()
            correct += int((predictions == labels.reshape(-1)).sum())
            seen += len(predictions)
    return correct / max(seen, 1)
