"""Figures of semantic pruning, drawn from its results (never recomputed here).

Every function takes evaluation rows as dicts (``MaskEvaluation.to_dict()`` or rows read back
from JSON) or :class:`~filterscope.methods.semantic_pruning.evaluation.MaskEvaluation` objects.

* :func:`plot_class_curves`: per class, recall, precision, AUC and overall accuracy of the
  network pruned for it vs θ, both modes (the paper's Fig. 5 plus what it leaves out).
* :func:`plot_direct_residual`: share of each layer's filters pruned directly and residually at
  a few θ, mean over classes (the paper's Fig. 4).
* :func:`plot_overlap_matrix`: pairwise Jaccard overlap of the classes' kept and pruned sets.
* :func:`plot_overlap_curves`: for each class, its overlap with its most and least overlapping
  class as θ grows (the paper's Fig. 6).
* :func:`plot_pca`: the classes' accumulated-response vectors in two principal components (Fig. 7c).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import save_figure  # noqa: E402

__all__ = ["plot_class_curves", "plot_direct_residual", "plot_overlap_curves", "plot_overlap_matrix", "plot_pca"]

_MODE_COLOURS = {"nwp": "tab:blue", "lwp": "tab:orange"}


_save = save_figure


def _rows(evaluations: Sequence[Any]) -> list[dict]:
    return [row if isinstance(row, Mapping) else row.to_dict() for row in evaluations]


def _numeric(rows: list[dict]) -> list[dict]:
    return [row for row in rows if isinstance(row["setting"], (int, float))]


def plot_class_curves(evaluations: Sequence[Any], classes: Sequence[str] | None, path: str | Path,
                      title: str = "") -> Path:
    """One panel per class: recall (solid), precision (dashed), AUC (dotted) and overall
    accuracy (thin) of the network pruned for that class vs θ, NWP and LWP. A star marks a θ > 0
    whose recall beats the full network's; it is filled when precision did not drop there."""
    rows = _numeric(_rows(evaluations))
    class_indices = sorted({row["class_index"] for row in rows})
    columns = min(5, len(class_indices)) or 1
    lines = (len(class_indices) + columns - 1) // columns or 1
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.7 * lines), sharex=True, sharey=True, squeeze=False)
    for axis in axes.flat[len(class_indices):]:
        axis.set_visible(False)
    for axis, class_index in zip(axes.flat, class_indices):
        for mode, colour in _MODE_COLOURS.items():
            series = sorted((row for row in rows if row["class_index"] == class_index and row["mode"] == mode),
                            key=lambda row: row["setting"])
            if not series:
                continue
            theta = [row["setting"] for row in series]
            axis.plot(theta, [row["recall"] for row in series], "-", color=colour, label=f"{mode} recall")
            axis.plot(theta, [row["precision"] for row in series], "--", color=colour, label=f"{mode} precision")
            axis.plot(theta, [row["auc"] for row in series], ":", color=colour, label=f"{mode} AUC")
            axis.plot(theta, [row["accuracy"] for row in series], "-", color=colour, linewidth=0.6, alpha=0.6,
                      label=f"{mode} overall acc.")
            base = next((row for row in series if row["setting"] == 0), None)
            if base is not None:
                for row in series:
                    if row["setting"] > 0 and row["recall"] > base["recall"]:
                        kept_precision = row["precision"] >= base["precision"]
                        axis.plot(row["setting"], row["recall"], "*", markersize=9, color=colour,
                                  markerfacecolor=colour if kept_precision else "none")
        name = classes[class_index] if classes else str(class_index)
        axis.set_title(name, fontsize=9)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("θ (share pruned)")
    for axis in axes[:, 0]:
        axis.set_ylabel("score")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.06))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_direct_residual(evaluations: Sequence[Any], unit_names: Sequence[str], path: str | Path,
                         settings: Sequence[float] = (0.05, 0.25, 0.5), mode: str = "nwp", title: str = "") -> Path:
    """Per layer, the share of filters pruned directly (DP) and residually (RP), mean over the
    classes, one panel per θ (the paper's Fig. 4)."""
    rows = [row for row in _numeric(_rows(evaluations)) if row["mode"] == mode]
    figure, axes = plt.subplots(len(settings), 1, figsize=(max(6, 0.32 * len(unit_names)), 2.3 * len(settings)),
                                sharex=True, squeeze=False)
    positions = np.arange(len(unit_names))
    for axis, setting in zip(axes[:, 0], settings):
        chosen = [row for row in rows if abs(row["setting"] - setting) < 1e-9]
        if not chosen:
            axis.set_title(f"θ = {setting}: not evaluated", fontsize=9)
            continue
        direct = np.array([[row["direct_per_unit"].get(name, 0.0) for name in unit_names] for row in chosen]).mean(0)
        residual = np.array([[row["residual_per_unit"].get(name, 0.0) for name in unit_names] for row in chosen]).mean(0)
        axis.bar(positions, direct, color="tab:red", label="direct (DP)")
        axis.bar(positions, residual, bottom=direct, color="tab:gray", label="residual (RP)")
        axis.set_ylim(0, 1)
        axis.set_ylabel("share of filters")
        axis.set_title(f"{mode.upper()} θ = {setting} (mean over {len(chosen)} classes)", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=8, loc="upper left")
    axes[-1, 0].set_xticks(positions)
    axes[-1, 0].set_xticklabels(unit_names, rotation=90, fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_overlap_matrix(matrices: Mapping[str, np.ndarray], classes: Sequence[str], path: str | Path,
                        title: str = "") -> Path:
    """Heat maps of the pairwise Jaccard overlap of the kept and of the pruned filter sets."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for axis, key in zip(axes, ("kept_jaccard", "pruned_jaccard")):
        image = axis.imshow(matrices[key], vmin=0, vmax=1, cmap="viridis")
        axis.set_xticks(range(len(classes)))
        axis.set_xticklabels(classes, rotation=90, fontsize=8)
        axis.set_yticks(range(len(classes)))
        axis.set_yticklabels(classes, fontsize=8)
        axis.set_title(key.replace("_", " "), fontsize=10)
        figure.colorbar(image, ax=axis, fraction=0.046)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_overlap_curves(thetas: Sequence[float], jaccard: np.ndarray, classes: Sequence[str], path: str | Path,
                        key: str = "kept", title: str = "") -> Path:
    """For each class, the Jaccard overlap of its ``key`` set with its most and least overlapping
    class as θ grows; ``jaccard`` is ``(thetas, classes, classes)`` (the paper's Fig. 6)."""
    jaccard = np.asarray(jaccard, dtype=float)
    columns = min(5, len(classes))
    lines = (len(classes) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), sharex=True, sharey=True, squeeze=False)
    reference = len(thetas) // 2  # most/least overlapping chosen at the middle θ
    for class_index, axis in enumerate(axes.flat):
        if class_index >= len(classes):
            axis.set_visible(False)
            continue
        others = [j for j in range(len(classes)) if j != class_index]
        at_reference = jaccard[reference, class_index, others]
        most, least = others[int(np.argmax(at_reference))], others[int(np.argmin(at_reference))]
        axis.plot(thetas, jaccard[:, class_index, most], "-o", markersize=3, label=f"most: {classes[most]}")
        axis.plot(thetas, jaccard[:, class_index, least], "-s", markersize=3, label=f"least: {classes[least]}")
        axis.set_title(classes[class_index], fontsize=9)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("θ")
    for axis in axes[:, 0]:
        axis.set_ylabel(f"Jaccard ({key})")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_pca(coordinates: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The classes' (masked) accumulated-response vectors in their first two principal components."""
    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    axis.scatter(coordinates[:, 0], coordinates[:, 1], c=np.arange(len(classes)), cmap="tab10", s=40)
    for index, name in enumerate(classes):
        axis.annotate(name, coordinates[index, :2], fontsize=8, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
