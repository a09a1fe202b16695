"""Receptive fields of filters, as Network Dissection defines them (Bau et al., CVPR 2017).

For filter f of a unit, its activation map A_f(x) on image x is the unit's response (``where="response"``
of :mod:`filterscope.core.unit_hooks`: after the unit's activation, or the ReLU of its BatchNorm output
where it has none). Its top quantile T_f is the level with P(A_f(x)[i, j] > T_f) = 1 − q over every
spatial position of every image of a data set (q = 0.995 by default); its field on image x is

    M_f(x) = S_f(x) > T_f,    S_f(x) = bilinear upsampling of A_f(x) to the image size.

As in Network Dissection, T_f is taken over the maps at their own resolution (before upsampling).
It is computed exactly and streaming: each filter keeps only its largest (1 − q)·N·h·w + 2 values
(N images of h × w positions), enough for ``numpy.quantile(values, q)`` with linear interpolation;
the number of images must therefore be known before the pass. The field is *strictly* above T_f, so
a filter whose map is zero (a gate that is closed for that input) has no field even where T_f is 0.

For a decoupled model the maps are those of the gated network (:func:`read_units`): a filter closed
for an input contributes an all-zero map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.batches import split_batch
from ..core.errors import UserInputError
from ..core.hooks import Hooks
from ..core.unit_hooks import register_unit_hooks
from ..core.units import Unit
from ..methods.decoupling.model import DecoupledModel
from ..methods.decoupling.unwrap import gated_unit_views, units_named

DEFAULT_QUANTILE = 0.995  # Network Dissection's top quantile
WHERE = "response"  # where activation maps are read (see filterscope.core.unit_hooks)


def read_units(model: nn.Module, names: Sequence[str] | None = None,
               input_shape: tuple[int, int, int] | None = None) -> list[Unit]:
    """The units whose fields are read: a decoupled model's gated units (as units of its gated network),
    or the units ``names`` of a plain network (``input_shape`` needed then).

    Raises:
        UserInputError: a plain network without ``names`` or ``input_shape``.
    """
    if isinstance(model, DecoupledModel):
        views = gated_unit_views(model)
        return views if names is None else [unit for unit in views if unit.name in set(names)]
    if names is None or input_shape is None:
        raise UserInputError("a network without gates needs the unit names and the input shape to read; pass "
                             "names=decoupled.gated_units and input_shape=decoupled.input_shape.")
    return units_named(model, list(names), tuple(input_shape))


@torch.no_grad()
def activation_maps(model: nn.Module, units: Sequence[Unit], images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass of ``images``; each unit's activation maps ``(B, C, h, w)`` and the model's output.

    The hooks are removed when the pass ends, after an error too; the model is not changed (put it in
    eval mode first).
    """
    maps: dict[str, torch.Tensor] = {}

    def keep(unit: Unit, activation: torch.Tensor) -> None:
        maps[unit.name] = activation.detach().float()

    with Hooks() as hooks:
        register_unit_hooks(hooks, units, WHERE, keep)
        output = model(images)
    missing = [unit.name for unit in units if unit.name not in maps]
    if missing:
        raise UserInputError(f"unit {missing[0]!r} did not run in the forward pass; pass units that the model uses.")
    return maps, output


@dataclass
class FieldThresholds:
    """Each filter's top-quantile level T_f over a data set.

    Attributes:
        unit_names: the units, in order.
        thresholds: per unit, T_f of each filter, float32 ``(C,)``.
        quantile: q.
        num_images: N, the images the quantile was taken over.
        map_sizes: per unit, (h, w) of its activation maps.
    """

    unit_names: list[str]
    thresholds: dict[str, np.ndarray]
    quantile: float
    num_images: int
    map_sizes: dict[str, tuple[int, int]]

    def summary(self) -> dict:
        return {"quantile": self.quantile, "num_images": self.num_images, "method": "exact, streaming top values",
                "map_sizes": {name: list(size) for name, size in self.map_sizes.items()}}


class TopQuantile:
    """The exact q-quantile (linear interpolation, as ``numpy.quantile``) of each row of a stream of
    ``(C, n)`` blocks whose total length ``total`` is known in advance; keeps only the largest
    ``total − floor(q·(total − 1))`` values of each row."""

    def __init__(self, channels: int, total: int, quantile: float):
        self.total, self.quantile, self.seen = int(total), float(quantile), 0
        self.position = quantile * (total - 1)
        self.keep = self.total - math.floor(self.position)
        self.top = torch.empty(channels, 0)

    def update(self, values: torch.Tensor) -> None:
        self.seen += values.shape[1]
        merged = torch.cat([self.top, values.float().cpu()], dim=1)
        self.top = merged.topk(min(self.keep, merged.shape[1]), dim=1).values

    def value(self) -> np.ndarray:
        if self.seen != self.total:
            raise RuntimeError(f"TopQuantile expected {self.total} values per row, saw {self.seen}.")
        low = math.floor(self.position)
        fraction = self.position - low
        # top is sorted descending: ascending index i sits at total − 1 − i.
        below = self.top[:, self.total - 1 - low]
        above = self.top[:, max(self.total - 2 - low, 0)] if fraction > 0 else below
        return (below + fraction * (above - below)).numpy().astype(np.float32)


def check_quantile(quantile: float) -> None:
    if not 0.0 < quantile < 1.0:
        raise UserInputError(f"the quantile must lie in (0, 1), got {quantile}; pass 0.995 (Network Dissection's).")


@torch.no_grad()
def field_thresholds(model: nn.Module, units: Sequence[Unit], batches: Iterable, num_images: int, *,
                     quantile: float = DEFAULT_QUANTILE, device: str | torch.device = "cpu") -> FieldThresholds:
    """T_f of every filter of ``units`` over the first ``num_images`` images of ``batches``, exactly.

    Args:
        model: the network (in eval mode), a :class:`DecoupledModel` or a plain one.
        units: from :func:`read_units`.
        batches: ``(images, labels)`` pairs or image tensors, already normalised.
        num_images: N; the batches must hold at least this many images (the rest are not read).
        quantile: q.

    Raises:
        UserInputError: q outside (0, 1), or fewer than ``num_images`` images.
    """
    check_quantile(quantile)
    if num_images < 1:
        raise UserInputError(f"the quantile needs at least one image, got {num_images}; pass more images.")
    trackers: dict[str, TopQuantile] = {}
    sizes: dict[str, tuple[int, int]] = {}
    seen = 0
    for batch in batches:
        images = batch if isinstance(batch, torch.Tensor) else split_batch(batch)[0]
        images = images[: num_images - seen].to(device)
        maps, _ = activation_maps(model, units, images)
        for unit in units:
            activation = maps[unit.name]
            channels, height, width = activation.shape[1:]
            if unit.name not in trackers:
                trackers[unit.name] = TopQuantile(channels, num_images * height * width, quantile)
                sizes[unit.name] = (int(height), int(width))
            trackers[unit.name].update(activation.transpose(0, 1).reshape(channels, -1))
        seen += images.shape[0]
        if seen >= num_images:
            break
    if seen < num_images:
        raise UserInputError(f"the quantile was asked over {num_images} images but the data has {seen}; pass fewer "
                             "images or a larger split.")
    return FieldThresholds([unit.name for unit in units], {name: t.value() for name, t in trackers.items()},
                           float(quantile), int(num_images), sizes)


def upsampled_fields(maps: torch.Tensor, thresholds: np.ndarray, image_size: tuple[int, int]) -> torch.Tensor:
    """M_f = bilinear upsampling of ``maps`` ``(B, C, h, w)`` to ``image_size`` > T_f; bool ``(B, C, H, W)``."""
    upsampled = F.interpolate(maps.float(), size=tuple(image_size), mode="bilinear", align_corners=False)
    return upsampled > torch.as_tensor(thresholds, dtype=upsampled.dtype, device=upsampled.device)[None, :, None, None]


def receptive_fields(maps: dict[str, torch.Tensor], thresholds: FieldThresholds,
                     image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Each unit's fields, bool ``(B, C, H, W)``, from its maps of one batch (see :func:`activation_maps`)."""
    return {name: upsampled_fields(maps[name], thresholds.thresholds[name], image_size) for name in thresholds.unit_names}
