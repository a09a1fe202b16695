"""Figures of what a decoupled network's paths say (drawn from saved results only).

* :func:`draw_path_embedding`: the 2-D t-SNE embedding of each representation, coloured by class, with
  its k-NN accuracy and silhouettes in the panel's title (Li et al., 2020, Fig. 3).
* :func:`draw_hopkins_tree`: the decision tree (Fig. 9) as an icicle: the gated layers left to right,
  each group of inputs a bar whose height is its size, stacked by class; a group splits where its bar
  forks, with the Hopkins statistic there.
* :func:`draw_class_parting`: per pair of classes, the gated layer where they part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, save_figure

TITLES = {"decoupled_paths": "decoupled: calculation paths", "dense_binary": "dense: activation > 0",
          "dense_real": "dense: pooled activations"}


def _class_colours(num_classes: int):
    colormap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return [colormap(k % colormap.N) for k in range(num_classes)]


def draw_path_embedding(embeddings: dict[str, np.ndarray], labels: np.ndarray, summary: dict, path: str | Path) -> Path:
    """One scatter per representation (``embeddings[name]``: (n, 2)); ``summary``: the path embedding's
    metrics (``representations[name]`` with ``knn_accuracy``, ``silhouette_embedding``, ``silhouette_pca``)."""
    names = list(embeddings)
    classes = summary.get("classes") or [str(k) for k in range(int(labels.max()) + 1)]
    colours = _class_colours(len(classes))
    figure, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 4.6), squeeze=False)
    for axis, name in zip(axes[0], names):
        points = embeddings[name]
        for label, class_name in enumerate(classes):
            chosen = labels == label
            axis.scatter(points[chosen, 0], points[chosen, 1], s=4, color=colours[label], label=class_name, alpha=0.8,
                         linewidths=0)
        scores = summary["representations"][name]
        silhouettes = [("-" if scores[k] is None else f"{scores[k]:.2f}") for k in ("silhouette_embedding", "silhouette_pca")]
        axis.set_title(f"{TITLES.get(name, name)}\n{summary['knn_neighbours']}-NN acc. {scores['knn_accuracy']:.3f}, "
                       f"silhouette {silhouettes[0]} (2-D) / {silhouettes[1]} (PCA)", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, markerscale=3, frameon=False)
    figure.suptitle(f"t-SNE of {summary['num_inputs']} inputs (PCA to ≤ {summary['config']['pca_dims']} first)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def _draw_node(axis, node: dict, layer_index: dict, bottom: float, scale: float, colours, classes, gap: float) -> None:
    """Draw ``node`` from its start layer to its split (or the last layer), then its children below it."""
    last = len(layer_index)  # the column after the last gated layer holds the parts of splits there
    start = layer_index[node["start_layer"]] if node["start_layer"] is not None else last
    end = layer_index[node["layer"]] + 1 if node["layer"] is not None else (last + 1 if start == last else last)
    height = node["size"] * scale
    if end > start:
        level = bottom
        for class_index, class_name in enumerate(classes):
            share = node["class_histogram"].get(class_name, 0) * scale
            if share:
                axis.barh(level + share / 2, end - start, height=share, left=start - 0.5, color=colours[class_index],
                          edgecolor="none")
            level += share
        axis.add_patch(plt.Rectangle((start - 0.5, bottom), end - start, height, fill=False, linewidth=0.6))
    if node["children"]:
        if node["hopkins"] is not None:
            axis.text(end - 0.5, bottom + height / 2, f"H {node['hopkins']:.2f}", fontsize=6, ha="center", va="center",
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
        child_scale = (height - gap * (len(node["children"]) - 1)) / max(node["size"], 1)
        level = bottom
        for child in node["children"]:
            _draw_node(axis, child, layer_index, level, child_scale, colours, classes, gap * 0.6)
            level += child["size"] * child_scale + gap


def draw_hopkins_tree(tree: dict, layer_names: list[str], classes: list[str], path: str | Path,
                      threshold: float | None = None) -> Path:
    """The tree (``HopkinsTreeResult.to_dict()`` as saved) as an icicle over the gated layers."""
    layer_index = {name: k for k, name in enumerate(layer_names)}
    colours = _class_colours(len(classes))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(layer_names) + 3), 5.0))
    _draw_node(axis, tree, layer_index, 0.0, 1.0 / max(tree["size"], 1), colours, classes, gap=0.02)
    axis.set_xlim(-0.5, len(layer_names) + 0.5)
    axis.set_ylim(0, 1)
    axis.invert_yaxis()
    axis.set_xticks(range(len(layer_names) + 1), [*layer_names, "(after)"], rotation=45, ha="right", fontsize=8)
    axis.set_yticks([])
    axis.set_ylabel("inputs (bar height: group size)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in range(len(classes))]
    axis.legend(handles, classes, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    rule = f"split where H > {threshold:g}" if threshold is not None else "split where H exceeds the threshold"
    axis.set_title(f"Decision tree of the gate vectors over {tree['size']} inputs ({rule}; stacked by class)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def draw_class_parting(pairwise: np.ndarray, layer_names: list[str], classes: list[str], path: str | Path) -> Path:
    """Per pair of classes, the gated layer where their majorities part in the tree (blank: never)."""
    pairwise = np.asarray(pairwise, dtype=float)
    shown = np.where(pairwise >= 0, pairwise, np.nan)
    figure, axis = plt.subplots(figsize=(0.45 * len(classes) + 3.5, 0.45 * len(classes) + 1.5))
    image = axis.imshow(shown, cmap="viridis_r", vmin=0, vmax=max(len(layer_names) - 1, 1))
    for a in range(len(classes)):
        for b in range(len(classes)):
            if pairwise[a, b] >= 0:
                dark = pairwise[a, b] > (len(layer_names) - 1) / 2  # viridis_r: late layers are dark
                axis.text(b, a, str(int(pairwise[a, b])), ha="center", va="center", fontsize=6,
                          color="white" if dark else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    bar = figure.colorbar(image, ax=axis, fraction=0.046)
    bar.set_ticks(range(len(layer_names)), labels=layer_names, fontsize=6)
    axis.set_title("gated layer where two classes part (blank: never)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
