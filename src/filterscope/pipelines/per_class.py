"""What the per-class analyses of a registered checkpoint share: the settings and the two loaders.

``filterscope influence`` and ``filterscope semantic-prune`` both build a registered model with
its weights, gather per-class statistics in one pass over one split (the *statistics split*:
where the influential features, or the accumulated responses, come from) and evaluate on another
split, then print a summary and, with a run directory, write it there. This module holds that
common part once; :mod:`filterscope.pipelines.influence` and
:mod:`filterscope.pipelines.semantic_pruning` run their method on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..analyses.workload import load_workload
from ..data.arrays import ArrayDataset
from ..models import ModelSpec

__all__ = ["PerClassSettings", "PerClassWorkload", "load_per_class_workload"]


@dataclass
class PerClassSettings:
    """The settings every per-class analysis of a checkpoint takes.

    Attributes:
        model: Registered model name.
        weights: Checkpoint path, or None for the model's initial weights.
        data: Registered data set name, or a folder or ``.zip`` of split/class/image files.
        statistics_split: Split the per-class statistics are gathered on (no augmentation).
        eval_split: Split the method is evaluated on.
        val_fraction: Share of the training split held out as ``"val"``.
        batch_size: Images per batch of the statistics pass.
        device: Where the model runs.
        run_dir: Run directory to write into, or None to write nothing.
        progress: Show progress bars.
    """

    model: str
    weights: str | None
    data: str
    statistics_split: str = "train"
    eval_split: str = "test"
    val_fraction: float = 0.0
    batch_size: int = 256
    device: str = "cpu"
    run_dir: str | None = None
    progress: bool = True

    def header(self) -> dict[str, Any]:
        """The first keys of every summary: ``{"model", "weights", "data"}``."""
        return {"model": self.model, "weights": self.weights, "data": str(self.data)}


@dataclass
class PerClassWorkload:
    """The model (evaluation mode, on ``device``) and the two splits, each with its loader.

    Attributes:
        model: The model with its weights.
        spec: Its registry entry.
        device: Where it runs.
        classes: Class names of the data.
        statistics_set, eval_set: The two splits.
        statistics_loader, eval_loader: Unshuffled loaders over them.
    """

    model: nn.Module
    spec: ModelSpec
    device: torch.device
    classes: list[str]
    statistics_set: ArrayDataset
    eval_set: ArrayDataset
    statistics_loader: DataLoader
    eval_loader: DataLoader


def load_per_class_workload(settings: PerClassSettings, *, eval_batch_size: int | None = None) -> PerClassWorkload:
    """Build the model with its weights and load both splits; bad input fails here, before any long pass.

    Args:
        settings: Model, weights, data, splits, batch size and device.
        eval_batch_size: Images per batch of the evaluation loader (default ``settings.batch_size``).

    Returns:
        The :class:`PerClassWorkload`, loaders unshuffled.
    """
    workload = load_workload(settings.model, settings.weights, settings.data,
                             (settings.statistics_split, settings.eval_split), val_fraction=settings.val_fraction,
                             batch_size=settings.batch_size, device=settings.device)
    statistics_set = workload.splits[settings.statistics_split]
    eval_set = workload.splits[settings.eval_split]
    return PerClassWorkload(
        model=workload.model,
        spec=workload.spec,
        device=workload.device,
        classes=workload.classes,
        statistics_set=statistics_set,
        eval_set=eval_set,
        statistics_loader=DataLoader(statistics_set, batch_size=settings.batch_size, shuffle=False),
        eval_loader=DataLoader(eval_set, batch_size=eval_batch_size or settings.batch_size, shuffle=False),
    )
