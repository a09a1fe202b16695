"""Figures of the adversarial-detection analysis, drawn from its saved arrays (``arrays/adversarial.npz``).

* :func:`draw_auc_grid`: AUC (mean ± std over runs) against n per class, one line per feature, one panel per
  classifier, one row per train → test attack (Table 6 as a picture).
* :func:`draw_pair_frequencies`: Fig. 10 (left) of Li et al. (2020): per gated layer, the share of real a,
  real b and a → b adversarial paths that open each filter.
* :func:`draw_pair_embedding`: Fig. 10 (right): a 2-D embedding of the three groups' paths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .figures import plt, save_figure

GROUP_COLOURS = ("#2c7bb6", "#1a9641", "#d7191c")


def draw_auc_grid(grids: dict[str, tuple[np.ndarray, np.ndarray]], classifiers: Sequence[str], n_values: Sequence[int],
                  features: Sequence[str], path: str | Path) -> Path:
    """``grids[title] = (mean, std)``, each (classifiers, n, features)."""
    rows, columns = len(grids), len(classifiers)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.7 * rows), squeeze=False, sharey=True)
    for row, (title, (mean, std)) in enumerate(grids.items()):
        for column, classifier in enumerate(classifiers):
            axis = axes[row][column]
            for index, feature in enumerate(features):
                axis.errorbar(n_values, mean[column, :, index], yerr=std[column, :, index], marker="o", capsize=3,
                              label=feature)
            axis.axhline(0.5, color="#999999", linestyle=":", linewidth=1)
            axis.set_title(f"{classifier}, {title}", fontsize=8)
            axis.set_xticks(list(n_values))
            axis.set_xlabel("training images per class", fontsize=7)
            axis.tick_params(labelsize=7)
        axes[row][0].set_ylabel("ROC AUC", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return save_figure(figure, path)


def draw_pair_frequencies(frequencies: np.ndarray, widths: Sequence[int], layer_names: Sequence[str],
                          group_names: Sequence[str], path: str | Path) -> Path:
    """``frequencies`` (3, D): per group, the share of its paths opening each filter; one panel per layer."""
    columns = min(3, len(widths))
    rows = math.ceil(len(widths) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 2.3 * rows), squeeze=False)
    starts = np.concatenate([[0], np.cumsum(widths)])
    for layer, axis in enumerate(axes.flat[:len(widths)]):
        block = frequencies[:, starts[layer]:starts[layer + 1]]
        order = np.argsort(-np.nan_to_num(block[0]), kind="stable")  # filters sorted by how often real a opens them
        for group, (name, colour) in enumerate(zip(group_names, GROUP_COLOURS)):
            axis.plot(np.arange(block.shape[1]), block[group, order], color=colour, linewidth=1.2, label=name)
        axis.set_title(layer_names[layer], fontsize=8)
        axis.set_ylim(-0.03, 1.03)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(widths):]:
        axis.axis("off")
    axes[0][0].set_ylabel("share of paths opening the filter", fontsize=7)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)


def draw_pair_embedding(embedding: np.ndarray, groups: np.ndarray, group_names: Sequence[str], method: str,
                        path: str | Path) -> Path:
    figure, axis = plt.subplots(figsize=(4.8, 4.2))
    for group, (name, colour) in enumerate(zip(group_names, GROUP_COLOURS)):
        points = embedding[groups == group]
        axis.scatter(points[:, 0], points[:, 1], s=10, color=colour, alpha=0.7, label=f"{name} ({len(points)})")
    axis.set_title(f"calculation paths ({method})", fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7)
    return save_figure(figure, path)
