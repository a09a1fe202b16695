"""Figures of the influential-feature analysis, drawn from arrays (never recomputed here).

* :func:`draw_k_grid`: r_A over the k1 × k2 grid (the paper's Fig. 3).
* :func:`draw_jaccard`: pairwise Jaccard overlap of the classes' index sets.
* :func:`draw_counts`: the class × feature histogram of Algorithm 1 with the chosen sets marked.
* :func:`draw_influence_maps`: per class, images with their influential and non-influential
  feature maps upsampled over them (the paper's Table 7).
* :func:`draw_mutual_information`: per class, the mutual information of its influential
  features against that of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import save_figure  # noqa: E402

__all__ = ["draw_counts", "draw_influence_maps", "draw_jaccard", "draw_k_grid", "draw_mutual_information"]


_save = save_figure


def draw_k_grid(
    values: np.ndarray,
    k1_values: Sequence[int],
    k2_values: Sequence[int],
    path: str | Path,
    *,
    title: str = "relative accuracy r_A = A_d / A_f",
) -> Path:
    """Heat map of ``values[i, j]`` at ``k1 = k1_values[i]``, ``k2 = k2_values[j]``; the k2 = k1 cells are outlined."""
    values = np.asarray(values, dtype=float)
    figure, axis = plt.subplots(figsize=(0.55 * len(k2_values) + 2.5, 0.45 * len(k1_values) + 1.8))
    image = axis.imshow(values, cmap="viridis", vmin=np.nanmin(values), vmax=np.nanmax(values), origin="lower")
    axis.set_xticks(range(len(k2_values)), [str(k) for k in k2_values])
    axis.set_yticks(range(len(k1_values)), [str(k) for k in k1_values])
    axis.set_xlabel("k2 (features kept per class)")
    axis.set_ylabel("k1 (features counted per instance)")
    axis.set_title(title)
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for i in range(len(k1_values)):
        for j in range(len(k2_values)):
            if np.isfinite(values[i, j]):
                axis.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if values[i, j] < middle else "black")
            if k1_values[i] == k2_values[j]:
                axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    figure.colorbar(image, ax=axis, shrink=0.8)
    return _save(figure, path)


def draw_jaccard(overlap: np.ndarray, classes: Sequence[str], path: str | Path, *, title: str = "Jaccard overlap of index sets") -> Path:
    """Heat map of the ``(classes, classes)`` Jaccard overlap."""
    figure, axis = plt.subplots(figsize=(5.5, 4.8))
    image = axis.imshow(overlap, cmap="magma", vmin=0, vmax=1)
    axis.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    for a in range(len(classes)):
        for b in range(len(classes)):
            axis.text(b, a, f"{overlap[a, b]:.2f}", ha="center", va="center", fontsize=5.5,
                      color="white" if overlap[a, b] < 0.5 else "black")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, shrink=0.8)
    return _save(figure, path)


def draw_counts(counts: np.ndarray, indices: np.ndarray, classes: Sequence[str], path: str | Path,
                *, title: str = "Algorithm 1 histogram (selected features circled)") -> Path:
    """Heat map of the class × feature counts with each class's chosen features circled."""
    counts = np.asarray(counts, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.13 * counts.shape[1] + 2), 0.35 * counts.shape[0] + 1.5))
    image = axis.imshow(share, aspect="auto", cmap="Greys")
    for label, row in enumerate(indices):
        axis.scatter(list(row), [label] * len(row), s=22, facecolors="none", edgecolors="red", linewidths=0.9)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    axis.set_xlabel("feature index")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, shrink=0.8, label="share of the class's top-k1 entries")
    return _save(figure, path)


def _upsample(map_: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(map_, dtype=torch.float32)[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def draw_influence_maps(
    images: np.ndarray,
    maps: np.ndarray,
    labels: Sequence[int],
    influential: np.ndarray | Sequence[Sequence[int]],
    non_influential: np.ndarray | Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | Path,
) -> Path:
    """Per image: the image, the mean of its class's influential maps over it, and the mean of as many non-influential maps.

    Args:
        images: uint8 ``(N, H, W, 3)`` (or ``(N, H, W, 1)``).
        maps: ``(N, features, h, w)`` feature maps of the same images (the maps whose spatial mean
            is the final layer's input).
        labels: Class of each image (whose sets are shown).
        influential: Per class, the influential feature indices.
        non_influential: Per class, the same number of non-influential indices.
        classes: Class names.
        path: Where the PNG goes.
    """
    count = len(images)
    size = images.shape[1:3]
    figure, axes = plt.subplots(count, 3, figsize=(5.2, 1.7 * count), squeeze=False)
    # One colour scale for both overlays of an image, so their brightness can be compared.
    for row in range(count):
        label = int(labels[row])
        good = _upsample(maps[row][list(influential[label])].mean(0), size)
        poor = _upsample(maps[row][list(non_influential[label])].mean(0), size)
        top = max(float(good.max()), float(poor.max()), 1e-8)
        picture = images[row] if images.shape[3] == 3 else images[row, :, :, 0]
        axes[row, 0].imshow(picture, cmap=None if images.shape[3] == 3 else "gray")
        axes[row, 0].set_ylabel(classes[label], fontsize=8)
        for column, overlay, name in ((1, good, "influential"), (2, poor, "non-influential")):
            axes[row, column].imshow(picture, cmap=None if images.shape[3] == 3 else "gray")
            axes[row, column].imshow(overlay, cmap="jet", alpha=0.5, vmin=0, vmax=top)
            if row == 0:
                axes[row, column].set_title(f"{name} maps", fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].set_title("image", fontsize=8)
    return _save(figure, path)


def draw_mutual_information(per_class: np.ndarray, indices: np.ndarray | Sequence[Sequence[int]],
                            classes: Sequence[str], path: str | Path, *, estimator: str = "binned") -> Path:
    """Per class: mean one-vs-rest mutual information of its influential features vs the other features."""
    inside, outside = [], []
    for label, row in enumerate(indices):
        chosen = np.zeros(per_class.shape[1], dtype=bool)
        chosen[list(row)] = True
        inside.append(per_class[label, chosen].mean())
        outside.append(per_class[label, ~chosen].mean())
    positions = np.arange(len(classes))
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.bar(positions - 0.2, inside, 0.4, label="influential features")
    axis.bar(positions + 0.2, outside, 0.4, label="other features")
    axis.set_xticks(positions, classes, rotation=45, ha="right", fontsize=7)
    axis.set_ylabel("I(feature; class = c) [bits]")
    axis.set_title(f"mutual information with the class, {estimator} estimate")
    axis.legend(fontsize=7)
    return _save(figure, path)
