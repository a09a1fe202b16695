"""``filterscope semantic-prune``: semantic pruning of a registered checkpoint, swept, evaluated and written.

Accumulated responses from one pass over the statistics split, then every class × mode × setting
pruned and evaluated on the evaluation split. With a run directory:

    metrics.json["semantic_pruning"]   the summary (one row per class, mode and setting)
    arrays/semantic_response.npz       the accumulated responses
    figures/semantic_*.png             per-class curves, direct and residual pruning per layer
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.errors import UserInputError
from ..core.units import Unit, find_units
from ..io.run_dir import RunDir
from ..methods.semantic_pruning.evaluation import MaskEvaluation
from ..methods.semantic_pruning.responses import AccumulatedResponse, accumulate_responses
from ..methods.semantic_pruning.overlap import overlap_matrices
from ..methods.semantic_pruning.selection import resolve_class, select_pruned
from ..methods.semantic_pruning.sweep import SemanticPruningConfig, sweep
from ..report import figures_semantic as figures
from .per_class import PerClassSettings, load_per_class_workload

__all__ = ["run_semantic_pruning", "summary_rows", "write_semantic_pruning_run"]


def run_semantic_pruning(settings: PerClassSettings, config: SemanticPruningConfig | None = None) -> dict[str, Any]:
    """The analysis of one checkpoint (``statistics_split`` is the response split).

    The evaluation loader's batches hold ``batch_size // masks_per_pass`` images, since each is
    repeated once per mask evaluated with it.

    Returns:
        The summary, as stored under ``metrics.json["semantic_pruning"]``.
    """
    config = config or SemanticPruningConfig()
    config.validate()
    workload = load_per_class_workload(settings, eval_batch_size=max(1, settings.batch_size // config.masks_per_pass))
    model, classes = workload.model, workload.classes
    if config.classes is not None:  # fail on a bad class before the long pass
        for value in config.classes:
            resolve_class(value, classes, len(classes))
    units = find_units(model, tuple(workload.spec.input_shape))
    unknown = [name for name in config.exclude if name not in {unit.name for unit in units}]
    if unknown:
        raise UserInputError(f"unknown units to exclude: {', '.join(unknown)}; see `filterscope units --model {settings.model}`.")
    response = accumulate_responses(model, units, workload.statistics_loader, len(classes), where=config.where,
                                    classes=classes, device=workload.device, progress=settings.progress)
    evaluations = sweep(model, units, response, workload.eval_loader, config, progress=settings.progress)
    summary = {**settings.header(), "where": config.where, "response_split": settings.statistics_split,
               "eval_split": settings.eval_split, "classes": classes, "results": summary_rows(evaluations, classes)}
    if settings.run_dir is not None:
        write_semantic_pruning_run(RunDir(settings.run_dir), response, evaluations, summary, units, config.exclude)
    return summary


def summary_rows(evaluations: Sequence[MaskEvaluation], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One summary row per evaluation: its :meth:`~MaskEvaluation.to_dict` with the class name, less the per-unit
    and per-class lists."""
    rows = []
    for evaluation in evaluations:
        row = evaluation.to_dict()
        row["class"] = classes[evaluation.class_index]
        row.pop("direct_per_unit")
        row.pop("residual_per_unit")
        row.pop("per_class_recall")
        rows.append(row)
    return rows


def write_semantic_pruning_run(run: RunDir, response: AccumulatedResponse, evaluations: Sequence[MaskEvaluation],
                               summary: dict[str, Any], units: Sequence[Unit], exclude: Sequence[str] = ()) -> None:
    """Write the responses, ``metrics.json["semantic_pruning"]`` and the figures into ``run``."""
    response.save(run.arrays / "semantic_response.npz")
    run.update_metrics("semantic_pruning", summary)
    figures.plot_class_curves(evaluations, response.classes, run.figures / "semantic_curves.png")
    figures.plot_direct_residual(evaluations, [unit.name for unit in units], run.figures / "semantic_dp_rp.png")
    _draw_overlaps(run, response, evaluations, exclude)


def _draw_overlaps(run: RunDir, response: AccumulatedResponse, evaluations: Sequence[MaskEvaluation],
                   exclude: Sequence[str]) -> None:
    """Kept/pruned overlap between the swept classes at the largest ratio θ of the first mode (two classes or more)."""
    class_indices = sorted({e.class_index for e in evaluations})
    ratios = [e.setting for e in evaluations if isinstance(e.setting, float) and e.setting > 0]
    if len(class_indices) < 2 or not ratios:
        return
    mode, theta = evaluations[0].mode, max(ratios)
    masks = [select_pruned(response, index, theta, mode, exclude=exclude) for index in class_indices]
    names = [response.classes[i] if response.classes else str(i) for i in class_indices]
    figures.plot_overlap_matrix(overlap_matrices(masks), names, run.figures / "semantic_overlap.png",
                                title=f"Overlap of the classes' filter sets at θ = {theta:g} ({mode})")
