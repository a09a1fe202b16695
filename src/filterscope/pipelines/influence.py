"""``filterscope influence``: influential features of a registered checkpoint, evaluated and written.

Index sets from one pass over the statistics split (Algorithm 1), then the full and the
decomposed model evaluated in one pass over the evaluation split. With a run directory:

    metrics.json["influence"]          the summary (index sets, accuracies, r_A, FLOPs)
    arrays/influence_indices.npz       index sets, scores, counts, per-feature moments
    figures/influence_*.png            counts, Jaccard overlap, influential feature maps, r_A over k1 × k2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import UserInputError
from ..io.run_dir import RunDir
from ..methods.influence.decomposed import DecompositionResult, evaluate_decomposition
from ..methods.influence.features import InfluenceConfig, InfluenceResult, find_influential_features
from ..methods.influence.final_layer import FINAL
from ..methods.influence.k_grid import relative_accuracy_grid
from ..methods.influence.criteria import select_top
from ..methods.influence.measures import feature_maps, jaccard_overlap
from ..report import figures_influence as figures
from .per_class import PerClassSettings, PerClassWorkload, load_per_class_workload

__all__ = ["decomposition_summary", "run_influence", "write_influence_run"]


def run_influence(settings: PerClassSettings, config: InfluenceConfig | None = None, *,
                  map_images: int = 2, k_grid: Sequence[int] = ()) -> dict[str, Any]:
    """The analysis of one checkpoint (``statistics_split`` is the index split); with ``k_grid`` (and the
    final layer) also r_A over every k1 × k2 of it (``summary["r_a_grid"]``, ``figures/influence_kgrid.png``).

    Returns:
        The summary, as stored under ``metrics.json["influence"]``.
    """
    config = config or InfluenceConfig()
    config.validate()
    workload = load_per_class_workload(settings)
    result = find_influential_features(workload.model, workload.statistics_loader, config, device=workload.device,
                                       progress=settings.progress)
    summary: dict[str, Any] = {**settings.header(), "index_split": settings.statistics_split,
                               "eval_split": settings.eval_split, **result.to_dict()}
    if config.at == FINAL:
        evaluation = evaluate_decomposition(workload.model, workload.eval_loader, result.indices,
                                            device=workload.device, progress=settings.progress)
        summary.update(decomposition_summary(evaluation))
        if k_grid:
            grid = relative_accuracy_grid(workload.model, workload.statistics_loader, workload.eval_loader, k_grid,
                                          criterion=config.criterion, labels=config.labels, device=workload.device,
                                          example_input=tuple(workload.spec.input_shape))
            summary["r_a_grid"] = grid.to_dict()
    if settings.run_dir is not None:
        write_influence_run(RunDir(settings.run_dir), result, summary, workload, map_images)
    return summary


def decomposition_summary(evaluation: DecompositionResult) -> dict[str, Any]:
    """The summary's keys for the full and the decomposed model on the evaluation split."""
    return {
        "accuracy_full": evaluation.accuracy_full,
        "accuracy_decomposed": evaluation.accuracy_decomposed,
        "relative_accuracy": evaluation.relative_accuracy,
        "flops_final_full": evaluation.flops_full,
        "flops_final_decomposed": evaluation.flops_decomposed,
        "per_class_full": evaluation.per_class_full,
        "per_class_decomposed": evaluation.per_class_decomposed,
        "num_eval_samples": evaluation.num_samples,
    }


def write_influence_run(run: RunDir, result: InfluenceResult, summary: dict[str, Any], workload: PerClassWorkload,
                        map_images: int) -> None:
    """Write the index sets, the figures and ``metrics.json["influence"]`` into ``run``.

    Args:
        run: The run directory.
        result: The index sets.
        summary: What goes into ``metrics.json["influence"]``.
        workload: The model and the evaluation split (feature maps are drawn from its first images).
        map_images: Images per class whose feature maps are drawn (0: none).
    """
    result.save(run)
    figures.draw_counts(result.statistics.counts, result.indices, result.classes, run.figures / "influence_counts.png")
    figures.draw_jaccard(jaccard_overlap(result.indices), result.classes, run.figures / "influence_jaccard.png")
    if "r_a_grid" in summary:
        grid = summary["r_a_grid"]
        figures.draw_k_grid(np.asarray(grid["values"]), grid["ks"], grid["ks"], run.figures / "influence_kgrid.png",
                            title=f"r_A over k1 × k2 ({result.config.criterion}; full layer {grid['accuracy_full']:.3f})")
    if map_images > 0 and result.config.at == FINAL:
        _draw_feature_maps(run, result, workload.model, workload.eval_set, map_images, workload.device)
    run.update_metrics("influence", summary)


def _draw_feature_maps(run: RunDir, result: InfluenceResult, model: nn.Module, eval_set: Any, map_images: int,
                       device: torch.device) -> None:
    """The maps of the influential and of as many least influential features, for the first images of each class."""
    chosen = np.concatenate([np.flatnonzero(eval_set.targets == c)[:map_images] for c in range(len(result.classes))])
    images = torch.stack([eval_set[int(i)][0] for i in chosen]).to(device)
    try:
        maps = feature_maps(model, images).cpu().numpy()
    except UserInputError:  # a model whose final layer does not read pooled maps: no figure
        return
    k2 = result.indices.shape[1]
    non_influential = select_top(-result.scores, k2)  # the least influential, as many
    figures.draw_influence_maps(eval_set.images[chosen], maps, eval_set.targets[chosen], result.indices,
                                non_influential, result.classes, run.figures / "influence_maps.png")
