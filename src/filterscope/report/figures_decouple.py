"""Figures of a decoupled network's calculation paths.

* :func:`draw_filter_states`: per gated layer, the share of energetic, dynamic and silent filters.
* :func:`draw_activation_histograms`: per layer, how many inputs switch each filter on.
* :func:`draw_flops_per_input`: the distribution of FLOPs per input under its gates, against dense.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..methods.decoupling.paths import PathRecord
from .figures import plt, save_figure


def draw_filter_states(record: PathRecord, path: str | Path) -> Path:
    states = record.filter_states()["per_layer"]
    names = list(states)
    shares = np.array([[states[n][k] / states[n]["filters"] for k in ("energetic", "dynamic", "silent")] for n in names])
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 3.6))
    bottom = np.zeros(len(names))
    for column, (label, colour) in enumerate((("energetic", "#2c7bb6"), ("dynamic", "#fdae61"), ("silent", "#bababa"))):
        axis.bar(range(len(names)), shares[:, column], bottom=bottom, color=colour, label=label)
        bottom += shares[:, column]
    axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel("share of the layer's filters")
    axis.set_title(f"Filter states over {record.num_samples} inputs")
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return save_figure(figure, path)


def draw_activation_histograms(record: PathRecord, path: str | Path, layers: list[str] | None = None) -> Path:
    """One panel per layer (all gated layers by default): histogram of each filter's activation count."""
    layers = layers or record.layer_names
    unknown = [name for name in layers if name not in record.layer_names]
    if unknown:
        raise ValueError(f"not gated layers: {', '.join(unknown)}; choose from {', '.join(record.layer_names)}")
    columns = min(4, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for axis, name in zip(axes.flat, layers):
        counts = record.activation_counts[record.layer_names.index(name)]
        axis.hist(counts / max(record.num_samples, 1), bins=np.linspace(0, 1, 21), color="#2c7bb6")
        axis.set_title(name, fontsize=8)
        axis.set_xlabel("share of inputs that switch the filter on", fontsize=7)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(layers):]:
        axis.axis("off")
    figure.tight_layout()
    return save_figure(figure, path)


def draw_flops_per_input(record: PathRecord, path: str | Path) -> Path:
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    axis.hist(record.flops / 1e6, bins=40, color="#fdae61")
    axis.axvline(record.dense_flops / 1e6, color="black", linestyle="--", label="dense")
    axis.axvline(record.flops.mean() / 1e6, color="#d7191c", label=f"mean ({record.dense_flops / record.flops.mean():.2f}× fewer)")
    axis.set_xlabel("MFLOPs per input under its gates")
    axis.set_ylabel("inputs")
    axis.legend(fontsize=8)
    return save_figure(figure, path)
