"""Dissection scores: how well single filters' receptive fields match concepts (Li et al., 2020, Table 1).

For filter f with field M_f(I) on image I (:mod:`.receptive_fields`) and concept t with mask L_t(I):

    IoU_{f,t}^I = |M_f(I) ∩ L_t(I)| / |M_f(I) ∪ L_t(I)|
    P_{f,t}     = mean over the images I that contain t of 1(IoU_{f,t}^I > 0.01)
    score(f)    = max_t P_{f,t}                       (over the concepts some image contains)
    score(layer) = mean of score(f) over the layer's filters

Beside it, Network Dissection's data-set-wide IoU (Bau et al., 2017), summed over the images annotated
for t (every image, for the plain and the colour interfaces):

    IoU_{f,t} = Σ_I |M_f(I) ∩ L_t(I)| / Σ_I |M_f(I) ∪ L_t(I)|,   f is a detector of t when max_t IoU_{f,t} > 0.04.

One streaming pass keeps, per unit, (C, T) counts and sums; no field or mask outlives its batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.atomic import atomic_file
from ..core.errors import UserInputError
from ..core.units import Unit
from .concept_batches import ConceptBatch
from .receptive_fields import FieldThresholds, activation_maps, receptive_fields

IMAGE_IOU_THRESHOLD = 0.01  # the paper's 1(IoU > 0.01)
DETECTOR_IOU = 0.04  # Network Dissection's detector threshold


@dataclass
class UnitCounts:
    """One unit's sums over the images: ``hits`` (C, T) images containing t with IoU > 0.01; ``contains``
    (T,) images containing t; ``intersection`` / ``union`` (C, T) pixel sums over annotated images;
    ``field_pixels`` (C,) pixels of the filter's fields over all images."""

    hits: np.ndarray
    contains: np.ndarray
    intersection: np.ndarray
    union: np.ndarray
    field_pixels: np.ndarray

    @classmethod
    def zeros(cls, channels: int, concepts: int) -> "UnitCounts":
        return cls(np.zeros((channels, concepts), np.int64), np.zeros(concepts, np.int64),
                   np.zeros((channels, concepts)), np.zeros((channels, concepts)), np.zeros(channels, np.int64))

    def probabilities(self) -> np.ndarray:
        """P_{f,t}, (C, T); NaN for concepts no image contains."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.contains > 0, self.hits / np.maximum(self.contains, 1), np.nan)

    def dataset_iou(self) -> np.ndarray:
        """Network Dissection's IoU_{f,t}, (C, T); 0 where the union is empty."""
        return np.divide(self.intersection, self.union, out=np.zeros_like(self.intersection), where=self.union > 0)


@dataclass
class DissectionResult:
    """Per-unit sums of a dissection and the scores drawn from them.

    Attributes:
        unit_names: the units, in order; ``counts`` their :class:`UnitCounts`.
        concepts: the concept names (T).
        num_images: images read.
        thresholds: the fields' :class:`FieldThresholds` summary.
    """

    unit_names: list[str]
    concepts: list[str]
    counts: dict[str, UnitCounts]
    num_images: int
    thresholds: dict

    def filter_scores(self, unit: str) -> np.ndarray:
        """score(f) = max_t P_{f,t} of each filter of ``unit``; 0 for every filter if no concept occurs."""
        probabilities = self.counts[unit].probabilities()
        if np.isnan(probabilities).all():
            return np.zeros(probabilities.shape[0])
        return np.nanmax(probabilities, axis=1)

    def summary(self) -> dict:
        """Per unit: the layer's score (mean over all filters, and over filters with any field), the best
        concept of each filter, Network Dissection's detectors; and the images each concept occurs in."""
        per_layer = {}
        for name in self.unit_names:
            counts = self.counts[name]
            scores, iou = self.filter_scores(name), counts.dataset_iou()
            best_concept = [self.concepts[t] if score > 0 else None  # no concept for a filter that never hits
                            for t, score in zip(np.nan_to_num(counts.probabilities(), nan=-1).argmax(1), scores)]
            best_iou, best_iou_concept = iou.max(1), [self.concepts[t] for t in iou.argmax(1)]
            detectors = best_iou > DETECTOR_IOU
            with_field = counts.field_pixels > 0
            per_layer[name] = {
                "filters": int(len(scores)), "score": float(scores.mean()),
                "filters_with_field": int(with_field.sum()),
                "score_over_filters_with_field": float(scores[with_field].mean()) if with_field.any() else float("nan"),
                "detectors": int(detectors.sum()), "detector_fraction": float(detectors.mean()),
                "detected_concepts": sorted({c for c, d in zip(best_iou_concept, detectors) if d}),
                "mean_best_iou": float(best_iou.mean()),
                "filter_score": [float(s) for s in scores], "filter_concept": best_concept,
                "filter_best_iou": [float(v) for v in best_iou], "filter_iou_concept": best_iou_concept,
            }
        first = self.counts[self.unit_names[0]]
        return {"num_images": self.num_images, "concepts": list(self.concepts), "thresholds": self.thresholds,
                "images_containing": {c: int(n) for c, n in zip(self.concepts, first.contains)},
                "image_iou_threshold": IMAGE_IOU_THRESHOLD, "detector_iou": DETECTOR_IOU, "per_layer": per_layer}

    def save(self, path: str | Path) -> Path:
        """All sums as one ``.npz`` (``<unit>/<field>`` arrays, plus the concept names)."""
        arrays = {f"{name}/{key}": getattr(self.counts[name], key) for name in self.unit_names
                  for key in ("hits", "contains", "intersection", "union", "field_pixels")}
        with atomic_file(Path(path)) as stream:
            np.savez_compressed(stream, concepts=np.array(self.concepts), unit_names=np.array(self.unit_names),
                                num_images=np.array(self.num_images), **arrays)
        return Path(path)


def batch_counts(fields: torch.Tensor, masks: torch.Tensor, annotated: torch.Tensor) -> UnitCounts:
    """The sums of one batch: ``fields`` bool (B, C, H, W), ``masks`` bool (B, T, H, W), ``annotated`` (B, T)."""
    fields_flat = fields.flatten(2).float()
    masks_flat = masks.flatten(2).float()
    intersection = torch.einsum("bcp,btp->bct", fields_flat, masks_flat)
    field_size, mask_size = fields_flat.sum(2), masks_flat.sum(2)
    union = field_size[:, :, None] + mask_size[:, None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.zeros_like(union))
    contains = (mask_size > 0) & annotated
    weight = annotated[:, None, :].float()
    return UnitCounts(
        hits=((iou > IMAGE_IOU_THRESHOLD) & contains[:, None, :]).sum(0).numpy().astype(np.int64),
        contains=contains.sum(0).numpy().astype(np.int64),
        intersection=(intersection * weight).sum(0).double().numpy(),
        union=(union * weight).sum(0).double().numpy(),
        field_pixels=field_size.sum(0).numpy().astype(np.int64),
    )


@torch.no_grad()
def dissect(model: nn.Module, units: Sequence[Unit], thresholds: FieldThresholds, batches: Iterable[ConceptBatch],
            concepts: Sequence[str], *, device: str | torch.device = "cpu") -> DissectionResult:
    """Dissection scores of ``units`` over ``batches`` (see the module docstring).

    Args:
        model: the network in eval mode (decoupled or plain); not changed.
        units: from :func:`filterscope.analyses.receptive_fields.read_units`.
        thresholds: each filter's T_f over a data set (:func:`field_thresholds`).
        batches: :class:`ConceptBatch` es (see :mod:`.concept_batches`).
        concepts: the names of the masks' T concepts.

    Raises:
        UserInputError: no image, or no image containing any concept.
    """
    totals: dict[str, UnitCounts] = {}
    num_images = 0
    for batch in batches:
        images = batch.images.to(device)
        masks = torch.as_tensor(batch.masks, dtype=torch.bool)
        annotated = (torch.ones(masks.shape[:2], dtype=torch.bool) if batch.annotated is None
                     else torch.as_tensor(batch.annotated, dtype=torch.bool))
        maps, _ = activation_maps(model, units, images)
        fields = receptive_fields(maps, thresholds, tuple(images.shape[-2:]))
        for unit in units:
            counts = batch_counts(fields[unit.name].cpu(), masks, annotated)
            if unit.name not in totals:
                totals[unit.name] = UnitCounts.zeros(counts.hits.shape[0], len(concepts))
            _accumulate(totals[unit.name], counts)
        num_images += images.shape[0]
    if num_images == 0:
        raise UserInputError("dissection got no image; pass a data set with images (and --images of at least 1).")
    if totals[units[0].name].contains.sum() == 0:
        raise UserInputError("no image contains any of the concepts; pass images that show them, or more images.")
    return DissectionResult([unit.name for unit in units], list(concepts), totals, num_images, thresholds.summary())


def _accumulate(total: UnitCounts, batch: UnitCounts) -> None:
    total.hits += batch.hits
    total.contains += batch.contains
    total.intersection += batch.intersection
    total.union += batch.union
    total.field_pixels += batch.field_pixels
