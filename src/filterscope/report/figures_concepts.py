"""Figures of the concept analyses, drawn from what their pipelines saved (never recomputed).

* :func:`draw_occlusion_examples`: per image, the image, the occluded region and the receptive fields of
  the switched-off filters that best match it (from ``arrays/occlusion.npz``).
* :func:`draw_occlusion_iou`: per gated layer, mean single-filter, best single and union IoU with the region.
* :func:`draw_dissection_layers`: per layer, the dissection score and Network Dissection's detectors,
  decoupled beside dense (from ``metrics.json["dissection"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, save_figure

FIELD_COLOURS = ("#d7191c", "#2c7bb6", "#1a9641")
EXAMPLES = 6


def _outline(axis, mask: np.ndarray, colour: str, width: float = 1.5) -> None:
    if mask.any() and not mask.all():
        axis.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=width)


def _shown(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def draw_occlusion_examples(arrays_path: str | Path, path: str | Path, examples: int = EXAMPLES) -> Path:
    """Rows of (image with its region; the same with the top switched-off filters' fields overlaid), for
    ``examples`` images evenly spaced over those analysed."""
    with np.load(arrays_path) as arrays:
        pixels, regions = arrays["pixels"], arrays["regions"]
        top_fields, top_filters = arrays["top_fields"], arrays["top_filters"]
        indices = arrays["image_indices"] if "image_indices" in arrays else np.arange(len(pixels))
    chosen = np.unique(np.round(np.linspace(0, len(pixels) - 1, min(examples, len(pixels)))).astype(int))
    figure, axes = plt.subplots(len(chosen), 2, figsize=(5.6, 2.5 * len(chosen)), squeeze=False)
    grey = "gray" if pixels.shape[-1] == 1 else None
    for (left, right), row in zip(axes, chosen):
        for axis in (left, right):
            axis.imshow(_shown(pixels[row]), cmap=grey, interpolation="nearest")
            _outline(axis, regions[row], "white", 2.0)
            axis.set_xticks([])
            axis.set_yticks([])
        left.set_title(f"image {indices[row]}, region (white)", fontsize=8)
        labels = []
        for k, name in enumerate(top_filters[row]):
            if not str(name):
                continue
            field = top_fields[row, k]
            overlay = np.zeros((*field.shape, 4))
            overlay[field] = (*plt.matplotlib.colors.to_rgb(FIELD_COLOURS[k]), 0.45)
            right.imshow(overlay, interpolation="nearest")
            _outline(right, field, FIELD_COLOURS[k])
            layer, filter_index, iou = str(name).rsplit(":", 2)
            labels.append(f"{layer}#{filter_index} IoU {float(iou):.2f}")
        right.set_title("\n".join(labels) if labels else "no filter switched off", fontsize=7)
    figure.suptitle("Switched-off filters' receptive fields (original image)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def draw_occlusion_iou(summary: dict, path: str | Path) -> Path:
    """Bars per gated layer: mean IoU with the region of single switched-off filters, the best one, their union."""
    layers = list(summary["per_layer"])
    keys = (("single_iou", "single filter (mean)", "#abd9e9"), ("best_single_iou", "best single filter", "#2c7bb6"),
            ("union_iou", "union of switched-off filters", "#d7191c"), ("stayed_on_iou", "filters that stayed on", "#bababa"))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(layers) + 2), 3.6))
    width = 0.8 / len(keys)
    for k, (key, label, colour) in enumerate(keys):
        values = [summary["per_layer"][name][key] for name in layers]
        axis.bar(np.arange(len(layers)) + (k - 1.5) * width, np.nan_to_num(values), width, color=colour, label=label)
    axis.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel("IoU with the occluded region")
    axis.set_title(f"Occlusion of {summary['num_images']} images ({summary['region_fraction']:.0%} of each)", fontsize=9)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(figure, path)


def draw_dissection_layers(summary: dict, path: str | Path) -> Path:
    """Two panels per layer, one bar per variant: the dissection score (mean of max_t P_{f,t}) and the share
    of filters that are Network Dissection detectors (data-set IoU > 0.04)."""
    rows = summary["per_layer"]
    layers = [row["layer"] for row in rows]
    variants = list(summary["variants"])
    palette = ("#2c7bb6", "#abd9e9", "#fdae61", "#777777")
    colours = {"decoupled": "#d7191c", "dense": "#2c7bb6"}
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.6 * len(layers) + 2), 6.0), sharex=True)
    width = 0.8 / len(variants)
    for k, variant in enumerate(variants):
        offset = (k - (len(variants) - 1) / 2) * width
        colour = colours.get(variant, palette[k % len(palette)])
        top.bar(np.arange(len(layers)) + offset, [row[f"{variant}_score"] for row in rows], width, color=colour, label=variant)
        bottom.bar(np.arange(len(layers)) + offset, [row[f"{variant}_detectors"] / row["filters"] for row in rows], width,
                   color=colour, label=variant)
    top.set_ylabel("dissection score")
    top.set_title(f"Dissection ({summary['concepts']}, {summary['num_images']} images)", fontsize=9)
    top.legend(fontsize=8)
    bottom.set_ylabel("share of filters that are\ndetectors (IoU > 0.04)")
    bottom.set_ylim(0, 1)
    bottom.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
