"""``filterscope occlude``: occlusion concept analysis of a decoupled checkpoint, written into a run directory.

    arrays/occlusion.npz        per image and gated layer: switched-off filters, IoUs, regions, the images,
                                the fields of the best-matching switched-off filters
    figures/occlusion_*.png     the image, the region and those fields; IoU per layer
    metrics.json["occlusion"]   the summary (per layer: single-filter, best single and union IoU)

Regions: one box or mask for ``--images`` images evenly spaced over the split (every class of a split stored
class by class), or one region per image from a
CSV (``index,x0,y0,x1,y1`` or ``index,mask``; ``index`` the image's position in the split, ``mask`` a
PNG path relative to the CSV whose non-zero pixels are the region).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analyses.occlusion import box_region, check_region, fill_values, occlusion_analysis
from ..analyses.receptive_fields import DEFAULT_QUANTILE, read_units
from ..core.errors import UserInputError
from ..io.run_dir import RunDir
from .concept_inputs import load_model, load_split, spread_images, stacked_images, thresholds_over

DEFAULT_QUANTILE_IMAGES = 1000


@dataclass
class OcclusionSettings:
    """What ``filterscope occlude`` was asked (see its flags)."""

    weights: str
    data: str
    split: str = "test"
    images: int = 100
    box: tuple[int, int, int, int] | None = None
    mask: str | None = None
    regions_csv: str | None = None
    fill: str = "black"
    quantile: float = DEFAULT_QUANTILE
    quantile_images: int | None = None
    batch_size: int = 100
    device: str = "cpu"
    val_fraction: float = 0.0
    run_dir: str | None = None
    progress: bool = True


def read_mask_file(path: str | Path, image_size: tuple[int, int]) -> np.ndarray:
    """A region from an image file: its non-zero pixels (any channel), checked against the image size."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"mask file {str(path)!r} does not exist; check the --mask path.")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError):
        raise UserInputError(f"{str(path)!r} is not an image; give the region as a PNG whose non-zero pixels mark it.") from None
    return check_region(pixels > 0, image_size, f"the mask {path.name}")


def read_regions_csv(path: str | Path, image_size: tuple[int, int], split_size: int) -> tuple[list[int], np.ndarray]:
    """(image positions, bool (N, H, W) regions) from a CSV of ``index,x0,y0,x1,y1`` or ``index,mask`` rows."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"regions file {str(path)!r} does not exist; check the --regions path.")
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    columns = set(rows[0]) if rows else set()
    if "index" not in columns or not ({"x0", "y0", "x1", "y1"} <= columns or "mask" in columns):
        raise UserInputError(f"{path.name} needs a header index,x0,y0,x1,y1 (or index,mask) and one row per image; "
                             "write it so.")
    indices, regions = [], []
    for line, row in enumerate(rows, start=2):
        try:
            index = int(row["index"])
        except (TypeError, ValueError):
            raise UserInputError(f"{path.name} line {line}: index {row['index']!r} is no integer; give the image's "
                                 "position in the split.") from None
        if not 0 <= index < split_size:
            raise UserInputError(f"{path.name} line {line}: index {index} is outside the split's {split_size} images; "
                                 f"give 0 to {split_size - 1}.")
        if row.get("mask"):
            regions.append(read_mask_file(path.parent / row["mask"], image_size))
        else:
            try:
                box = [int(row[key]) for key in ("x0", "y0", "x1", "y1")]
            except (TypeError, ValueError):
                raise UserInputError(f"{path.name} line {line}: x0,y0,x1,y1 must be integers.") from None
            regions.append(box_region(box, image_size))
        indices.append(index)
    if not indices:
        raise UserInputError(f"{path.name} lists no region; add one row per image.")
    return indices, np.stack(regions)


def _region_of(settings: OcclusionSettings, image_size: tuple[int, int]) -> np.ndarray:
    given = [settings.box is not None, settings.mask is not None, settings.regions_csv is not None]
    if sum(given) != 1:
        raise UserInputError("give exactly one region: --box x0 y0 x1 y1, --mask FILE.png or --regions FILE.csv.")
    if settings.box is not None:
        return box_region(settings.box, image_size)
    return read_mask_file(settings.mask, image_size)


def run_occlusion(settings: OcclusionSettings) -> dict[str, Any]:
    """Run the occlusion analysis of ``settings`` and write it into its run directory (if any).

    Returns:
        The summary stored under ``metrics.json["occlusion"]``, with ``run_dir``.
    """
    from ..core.distributed import resolve_device

    loaded = load_model(settings.weights, need_gates=True, verb="occlusion")
    image_size = loaded.input_shape[1:]
    full = load_split(loaded, settings.data, settings.split, val_fraction=settings.val_fraction)
    if settings.regions_csv is not None:
        if settings.box is not None or settings.mask is not None:
            raise UserInputError("give exactly one region: --box x0 y0 x1 y1, --mask FILE.png or --regions FILE.csv.")
        indices, regions = read_regions_csv(settings.regions_csv, image_size, len(full))
        dataset = full.subset(indices)
    else:
        region = _region_of(settings, image_size)
        dataset, indices = spread_images(full, settings.images, settings.split)
        regions = np.repeat(region[None], len(dataset), axis=0)
    quantile_images = (settings.quantile_images if settings.quantile_images is not None
                       else min(DEFAULT_QUANTILE_IMAGES, len(full)))
    quantile_set, _ = spread_images(full, quantile_images, settings.split, "--quantile-images")
    device = resolve_device(settings.device)
    model = loaded.model.to(device)
    thresholds = thresholds_over(model, read_units(model), quantile_set, settings.quantile, settings.batch_size, device)
    images = stacked_images(dataset)
    fill = fill_values(settings.fill, loaded.mean, loaded.std, images)
    result = occlusion_analysis(model, images, regions, thresholds, fill=fill, batch_size=settings.batch_size, device=device)
    summary = {**result.summary(), "weights": str(settings.weights), "data": str(settings.data), "split": settings.split,
               "fill_rule": settings.fill, "image_indices": [int(i) for i in indices],
               "quantile_images": f"{quantile_images} images evenly spaced over the {settings.split} split"}
    if settings.run_dir is not None:
        write_occlusion(result, dataset.images, np.asarray(indices), summary, RunDir(settings.run_dir))
    return {**summary, "run_dir": settings.run_dir}


def write_occlusion(result, pixels: np.ndarray, indices: np.ndarray, summary: dict, run: RunDir) -> None:
    """Arrays, figures (drawn from the arrays just written) and metrics of one occlusion analysis."""
    from ..core.atomic import atomic_file
    from ..report import figures_concepts as figures

    target = run.arrays / "occlusion.npz"
    with atomic_file(target) as stream:
        np.savez_compressed(stream, pixels=pixels, image_indices=indices, **result.arrays())
    figures.draw_occlusion_examples(target, run.figures / "occlusion_examples.png")
    figures.draw_occlusion_iou(summary, run.figures / "occlusion_iou_per_layer.png")
    run.update_metrics("occlusion", summary)
