"""Occlusion concept analysis (Li et al., 2020, Sec. 4.2, Figs. 6-8): which filters a region switches on.

For each image and region R, the decoupled model runs twice, on the image and on the image with R
occluded. Per gated layer the *switched-off* filters are those on in the original path and off after
(z = 1 before, 0 after); they are the filters that needed what R shows. How well they describe R:

- single-filter representation: IoU(M_f, R) of each switched-off filter's receptive field M_f on the
  *original* image (:mod:`.receptive_fields`) with R;
- multi-filter representation: IoU(∪_f M_f, R) of the union of the layer's switched-off filters' fields.

The paper reports the union about 3× the single filters. As a reference, the IoU of the filters that
stayed on is recorded too: if switched-off filters are no closer to R than those, the gates did not react
to R's content.

Occlusion fills R with ``fill`` per channel, in the model's normalised space: ``"black"`` is the pixel
value 0, i.e. −mean/std per channel; ``"mean"`` is the images' own mean per channel (computed over the
images analysed, in normalised space, so it is the normalised mean pixel of exactly these images); or
explicit values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.atomic import atomic_file
from ..core.errors import UserInputError
from ..methods.decoupling.model import DecoupledModel
from .receptive_fields import FieldThresholds, activation_maps, read_units, receptive_fields

FILLS = ("black", "mean")
TOP_FIELDS = 3  # switched-off filters whose fields are kept per image (for figures)


def box_region(box: Sequence[int], image_size: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) mask of the box ``(x0, y0, x1, y1)``: columns x0 ≤ x < x1, rows y0 ≤ y < y1.

    Raises:
        UserInputError: a box not inside the image, or empty.
    """
    height, width = image_size
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise UserInputError(f"the box ({x0}, {y0}, {x1}, {y1}) is not inside the {width}×{height} image; give "
                             f"0 ≤ x0 < x1 ≤ {width} and 0 ≤ y0 < y1 ≤ {height} (x1, y1 exclusive).")
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def check_region(mask: np.ndarray, image_size: tuple[int, int], what: str = "the mask") -> np.ndarray:
    """``mask`` as bool (H, W), checked: the image's size and not empty."""
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(image_size):
        raise UserInputError(f"{what} is {mask.shape[1] if mask.ndim > 1 else '?'}×{mask.shape[0]} but the images are "
                             f"{image_size[1]}×{image_size[0]}; give a mask of the image size.")
    if not mask.any():
        raise UserInputError(f"{what} is empty (no pixel set); mark the region to occlude with non-zero pixels.")
    return mask


def fill_values(fill: str | Sequence[float], mean: Sequence[float], std: Sequence[float],
                images: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel values, in normalised space, that an occluded region takes (see the module docstring)."""
    if isinstance(fill, str):
        if fill == "black":
            return -torch.tensor(tuple(mean), dtype=torch.float32) / torch.tensor(tuple(std), dtype=torch.float32)
        if fill == "mean":
            if images is None or len(images) == 0:
                raise UserInputError("fill 'mean' needs the images to average; pass them, or fill 'black'.")
            return images.float().mean(dim=(0, 2, 3))
        raise UserInputError(f"fill must be one of {', '.join(FILLS)} or per-channel values, got {fill!r}.")
    return torch.tensor([float(v) for v in fill], dtype=torch.float32)


def occlude(images: torch.Tensor, regions: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` (B, C, H, W) with ``regions`` (bool (B, H, W) or (H, W)) set to ``fill`` (C,)."""
    regions = torch.as_tensor(regions, dtype=torch.bool, device=images.device)
    regions = regions.expand(images.shape[0], *images.shape[-2:])[:, None]
    return torch.where(regions, fill.to(images)[None, :, None, None], images)


def _iou(fields: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """IoU of each field (..., H, W) with ``region`` (H, W)."""
    intersection = (fields & region).flatten(-2).sum(-1).float()
    union = (fields | region).flatten(-2).sum(-1).float()
    return intersection / union.clamp_min(1)


@dataclass
class OcclusionResult:
    """What occlusion did, per image and gated layer.

    Attributes:
        layer_names: the gated layers.
        switched_off / switched_on: per layer, bool (N, C): on before and off after / off before and on after.
        on_before: per layer, bool (N, C): the original path.
        single_iou: per layer, float32 (N, C): IoU of each filter's field (original image) with the region.
        union_iou: float32 (N, L): IoU of the union of the layer's switched-off fields with the region (NaN
            where none switched off).
        regions: bool (N, H, W).
        predictions_before / predictions_after: (N,) classes.
        top_fields: bool (N, k, H, W): the fields of the k switched-off filters (any layer) best matching the
            region; ``top_filters`` names them per image as (layer, filter, IoU).
        fill: the per-channel fill values; ``thresholds`` the field thresholds' summary.
    """

    layer_names: list[str]
    switched_off: dict[str, np.ndarray]
    switched_on: dict[str, np.ndarray]
    on_before: dict[str, np.ndarray]
    single_iou: dict[str, np.ndarray]
    union_iou: np.ndarray
    regions: np.ndarray
    predictions_before: np.ndarray
    predictions_after: np.ndarray
    top_fields: np.ndarray
    top_filters: list[list[tuple[str, int, float]]]
    fill: list[float]
    thresholds: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Per layer and over all layers: images where occlusion switched filters off, how many, and the mean
        single-filter IoU (over every switched-off filter), best single IoU and union IoU (over those images)."""
        per_layer = {}
        for index, name in enumerate(self.layer_names):
            off, iou = self.switched_off[name], self.single_iou[name]
            changed = off.any(1)
            stayed_on = self.on_before[name] & ~off
            single = float(iou[off].mean()) if off.any() else float("nan")
            union = float(np.nanmean(self.union_iou[changed, index])) if changed.any() else float("nan")
            best = float(np.where(off, iou, -1).max(1)[changed].mean()) if changed.any() else float("nan")
            per_layer[name] = {
                "images_with_switched_off": int(changed.sum()),
                "mean_switched_off": float(off.sum(1).mean()), "mean_switched_on": float(self.switched_on[name].sum(1).mean()),
                "mean_on_before": float(self.on_before[name].sum(1).mean()),
                "single_iou": single, "best_single_iou": best, "union_iou": union,
                "union_over_single": union / single if single > 0 else float("nan"),
                "stayed_on_iou": float(iou[stayed_on].mean()) if stayed_on.any() else float("nan"),
            }
        return {
            "num_images": int(len(self.regions)), "region_fraction": float(self.regions.mean()), "fill": self.fill,
            "prediction_changed": float((self.predictions_before != self.predictions_after).mean()),
            "thresholds": self.thresholds, "per_layer": per_layer,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays (``<layer>/switched_off`` etc.) for one ``.npz``."""
        arrays = {"regions": self.regions, "union_iou": self.union_iou, "layer_names": np.array(self.layer_names),
                  "predictions_before": self.predictions_before, "predictions_after": self.predictions_after,
                  "top_fields": self.top_fields,
                  "top_filters": np.array([[f"{layer}:{f}:{iou:.4f}" for layer, f, iou in row] + [""] * (TOP_FIELDS - len(row))
                                           for row in self.top_filters])}
        for name in self.layer_names:
            arrays.update({f"{name}/switched_off": self.switched_off[name], f"{name}/switched_on": self.switched_on[name],
                           f"{name}/on_before": self.on_before[name], f"{name}/single_iou": self.single_iou[name]})
        return arrays

    def save(self, path: str | Path) -> Path:
        with atomic_file(Path(path)) as stream:
            np.savez_compressed(stream, **self.arrays())
        return Path(path)


@torch.no_grad()
def occlusion_analysis(model: DecoupledModel, images: torch.Tensor, regions: np.ndarray | torch.Tensor,
                       thresholds: FieldThresholds, *, fill: torch.Tensor, batch_size: int = 100,
                       device: str | torch.device = "cpu") -> OcclusionResult:
    """Occlude ``regions`` of ``images`` and record, per gated layer, the filters switched off and their fields.

    Args:
        model: a decoupled model (hard evaluation gates are used; its training flag is restored).
        images: (N, C, H, W), normalised as the model expects.
        regions: bool (N, H, W), one region per image, or (H, W) for all; each checked non-empty.
        thresholds: each filter's T_f over a data set (:func:`field_thresholds`, on this model).
        fill: per-channel values of the occluded pixels (:func:`fill_values`).

    Raises:
        UserInputError: a model without gates, or an empty region.
    """
    if not isinstance(model, DecoupledModel):
        raise UserInputError("occlusion compares the gates before and after, so it needs a decoupled model; "
                             "decouple it first (`filterscope decouple`).")
    size = tuple(images.shape[-2:])
    regions = torch.as_tensor(np.asarray(regions), dtype=torch.bool).expand(images.shape[0], *size).clone()
    for index, region in enumerate(regions):
        check_region(region.numpy(), size, f"the region of image {index}")
    units = read_units(model)
    was_training = model.training
    model.eval()
    try:
        parts = [_occlude_batch(model, units, images[start:start + batch_size].to(device),
                                regions[start:start + batch_size].to(device), thresholds, fill)
                 for start in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    names = list(model.gated_units)
    merged = {key: {name: np.concatenate([p[key][name] for p in parts]) for name in names}
              for key in ("switched_off", "switched_on", "on_before", "single_iou")}
    return OcclusionResult(
        names, merged["switched_off"], merged["switched_on"], merged["on_before"], merged["single_iou"],
        np.concatenate([p["union_iou"] for p in parts]), regions.numpy(),
        np.concatenate([p["before"] for p in parts]), np.concatenate([p["after"] for p in parts]),
        np.concatenate([p["top_fields"] for p in parts]), [row for p in parts for row in p["top_filters"]],
        [float(v) for v in fill], thresholds.summary())


def _occlude_batch(model: DecoupledModel, units, images: torch.Tensor, regions: torch.Tensor,
                   thresholds: FieldThresholds, fill: torch.Tensor) -> dict:
    maps, logits = activation_maps(model, units, images)
    before = [z.gt(0.5).cpu() for z in model.last_gates()]
    fields = receptive_fields(maps, thresholds, tuple(images.shape[-2:]))
    after_logits = model(occlude(images, regions, fill))
    after = [z.gt(0.5).cpu() for z in model.last_gates()]
    regions = regions.cpu()
    out = {"switched_off": {}, "switched_on": {}, "on_before": {}, "single_iou": {}}
    union_iou = np.full((len(images), len(units)), np.nan, dtype=np.float32)
    candidates: list[list[tuple[float, str, int]]] = [[] for _ in range(len(images))]
    for index, (unit, on_before, on_after) in enumerate(zip(units, before, after)):
        unit_fields = fields[unit.name].cpu()
        off = on_before & ~on_after
        iou = torch.stack([_iou(unit_fields[b], regions[b]) for b in range(len(images))])
        for b in range(len(images)):
            if off[b].any():
                union_iou[b, index] = float(_iou(unit_fields[b][off[b]].any(0), regions[b]))
                candidates[b] += [(float(iou[b, f]), unit.name, int(f)) for f in torch.nonzero(off[b]).flatten()]
        out["switched_off"][unit.name] = off.numpy()
        out["switched_on"][unit.name] = (~on_before & on_after).numpy()
        out["on_before"][unit.name] = on_before.numpy()
        out["single_iou"][unit.name] = iou.numpy().astype(np.float32)
    top_fields = np.zeros((len(images), TOP_FIELDS, *images.shape[-2:]), dtype=bool)
    top_filters = []
    for b, found in enumerate(candidates):
        best = sorted(found, key=lambda item: -item[0])[:TOP_FIELDS]
        for k, (_, name, f) in enumerate(best):
            top_fields[b, k] = fields[name][b, f].cpu().numpy()
        top_filters.append([(name, f, value) for value, name, f in best])
    return {**out, "union_iou": union_iou, "top_fields": top_fields, "top_filters": top_filters,
            "before": logits.argmax(1).cpu().numpy(), "after": after_logits.argmax(1).cpu().numpy()}
