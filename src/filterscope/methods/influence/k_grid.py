"""r_A over a grid of k1 × k2 (the paper's Fig. 3): how the decomposed layer's accuracy depends on how many
features are counted per instance and kept per class.

The final layer's input is read once from each split and kept (a few floats per image); every (k1, k2)
cell then reuses it: one :class:`~.accumulation.InfluenceAccumulator` pass over the cached features per k1,
and one evaluation of the decomposed layer on the cached evaluation features per cell.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...core.batches import split_batch
from ...core.errors import UserInputError
from ...core.hooks import Hooks
from .accumulation import InfluenceAccumulator
from .criteria import criterion_scores, select_top
from .decomposed import DecomposedLinear, accuracy_of_head
from .final_layer import find_final_linear
from .passes import class_scores

__all__ = ["RelativeAccuracyGrid", "final_layer_inputs", "relative_accuracy_grid"]


@dataclass
class RelativeAccuracyGrid:
    """``values[i, j]`` is r_A at ``k1 = ks[i]``, ``k2 = ks[j]``; ``accuracy_full`` is the full layer's."""

    ks: list[int]
    values: np.ndarray
    accuracy_full: float

    def to_dict(self) -> dict:
        return {"ks": self.ks, "values": self.values.round(4).tolist(), "accuracy_full": self.accuracy_full}


def final_layer_inputs(model: nn.Module, loader: Iterable, head: nn.Module,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The input of ``head`` (the model's final linear layer), the labels and the predictions over ``loader``."""
    features, labels, predictions = [], [], []
    with Hooks() as hooks, torch.no_grad():
        slot: dict[str, torch.Tensor] = {}
        hooks.forward_pre(head, lambda module, inputs: slot.__setitem__("x", inputs[0].detach().flatten(1).cpu()))
        for batch in loader:
            images, targets = split_batch(batch)
            predictions.append(class_scores(model(images.to(device))).argmax(1).cpu())
            features.append(slot["x"])
            labels.append(targets.reshape(-1).long())
    return torch.cat(features), torch.cat(labels), torch.cat(predictions)


def relative_accuracy_grid(model: nn.Module, statistics_loader: Iterable, eval_loader: Iterable, ks: Sequence[int], *,
                           criterion: str = "l1", labels: str = "true", device: str | torch.device = "cpu",
                           example_input: torch.Tensor | Sequence[int] = (3, 32, 32)) -> RelativeAccuracyGrid:
    """r_A of the decomposed final layer for every ``k1, k2`` in ``ks`` (each at most the feature width).

    The model is neither changed nor switched to eval mode (call ``model.eval()`` first); the hook is removed.
    """
    device = torch.device(device)
    final = find_final_linear(model, example_input)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > final.in_features:
        raise UserInputError(f"the k grid must hold values in [1, {final.in_features}] (the final layer's features), "
                             f"got {ks}; pass e.g. --k-grid 1 2 5 10.")
    x_stats, y_stats, p_stats = final_layer_inputs(model, statistics_loader, final.module, device)
    x_eval, y_eval, _ = final_layer_inputs(model, eval_loader, final.module, device)
    head = copy.deepcopy(final.module).cpu()  # the caller's model stays where it is
    weight = head.weight.detach().double().numpy()
    grouping = y_stats if labels == "true" else p_stats
    accuracy_full = accuracy_of_head(head, x_eval, y_eval)
    values = np.full((len(ks), len(ks)), np.nan)
    for i, k1 in enumerate(ks):
        accumulator = InfluenceAccumulator(final.out_features, final.in_features, k1, labels=labels, final_layer=final.name)
        accumulator.add(x_stats, grouping, y_stats, p_stats)
        scores = criterion_scores(accumulator.statistics(), criterion, weight)
        for j, k2 in enumerate(ks):
            decomposed = DecomposedLinear.from_linear(head, select_top(scores, k2))
            values[i, j] = accuracy_of_head(decomposed, x_eval, y_eval) / accuracy_full if accuracy_full else np.nan
    return RelativeAccuracyGrid(ks, values, accuracy_full)
