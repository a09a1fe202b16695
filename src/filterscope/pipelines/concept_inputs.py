"""What ``filterscope occlude`` and ``filterscope dissect`` load before they analyse: the model of a
checkpoint (with its gates, or the plain network where that makes sense), its images, and the fields'
thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..analyses.receptive_fields import FieldThresholds, field_thresholds
from ..core.errors import UserInputError
from ..core.units import Unit
from ..data.arrays import ArrayDataset


@dataclass
class LoadedModel:
    """A checkpoint's model, ready to analyse.

    Attributes:
        model: the decoupled model, or the plain network when the checkpoint has no gates.
        decoupled: whether ``model`` has gates.
        unit_names: the units read (the gated units; for a plain network, every conv unit but the first and last,
            the units decoupling would gate).
        input_shape, mean, std, num_classes: what the inputs look like and how they are normalised.
        notice: one sentence on what was loaded, when it is not what the user may expect (else None).
    """

    model: nn.Module
    decoupled: bool
    unit_names: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    model_name: str | None
    notice: str | None = None


def has_gates(weights: str | Path) -> bool:
    """Whether ``weights`` is a decoupled checkpoint (format ``filterscope.decoupled/1``)."""
    from ..methods.decoupling.checkpoint import DECOUPLED_FORMAT
    from ..models.checkpoint import read_checkpoint

    return read_checkpoint(weights).get("format") == DECOUPLED_FORMAT


def load_model(weights: str | Path, *, need_gates: bool, model_name: str | None = None,
               num_classes: int | None = None, verb: str = "this analysis") -> LoadedModel:
    """The model of ``weights``: a decoupled checkpoint with its gates; a plain one only where ``need_gates``
    is False, built as the registered ``model_name``.

    Raises:
        UserInputError: a checkpoint without gates where they are needed, or without ``model_name``.
    """
    from ..methods.decoupling import load_decoupled
    from ..models import create_model, load_weights, model_spec

    if has_gates(weights):
        model = load_decoupled(weights).eval()
        spec = model_spec(model.model_name) if model.model_name else None
        mean = model.input_mean or (spec.mean if spec else None)
        std = model.input_std or (spec.std if spec else None)
        if mean is None or std is None:
            raise UserInputError(f"{str(weights)!r} does not say how its inputs were normalised; decouple it with "
                                 "run_decoupling, or give the network input_mean and input_std before decoupling.")
        return LoadedModel(model, True, list(model.gated_units), tuple(model.input_shape), tuple(mean), tuple(std),
                           model.num_classes, model.model_name)
    if need_gates:
        raise UserInputError(f"{str(weights)!r} has no gates and {verb} compares gates before and after; decouple it "
                             "first (`filterscope decouple`) and pass the decoupled checkpoint.")
    if model_name is None:
        raise UserInputError(f"{str(weights)!r} has no gates; pass --model with its architecture to analyse the dense "
                             "network, or decouple it first (`filterscope decouple`).")
    from ..core.units import find_units

    spec = model_spec(model_name)
    model = load_weights(create_model(model_name, num_classes), weights).eval()
    units = find_units(model, spec.input_shape)
    names = [unit.name for unit in (units[1:-1] if len(units) > 2 else units) if unit.gateable]
    return LoadedModel(model, False, names, tuple(spec.input_shape), tuple(spec.mean), tuple(spec.std),
                       num_classes or spec.default_num_classes, model_name,
                       notice=f"{weights} has no gates: only the dense network is dissected (no decoupled column).")


def load_split(loaded: LoadedModel, data: str, split: str, *, val_fraction: float = 0.0) -> ArrayDataset:
    """The images of ``split``, normalised as the model's inputs, checked against its input shape and classes."""
    from ..data import load_dataset

    return load_dataset(data, split, mean=loaded.mean, std=loaded.std, val_fraction=val_fraction,
                        expected_image_shape=loaded.input_shape, expected_num_classes=loaded.num_classes)


def spread_indices(total: int, count: int) -> np.ndarray:
    """``count`` positions evenly spaced over ``range(total)`` (all of them when ``count == total``): a split
    stored class by class (image folders, CIFAR-10 JPEG) then gives every class, not the first one."""
    return np.unique(np.round(np.linspace(0, total - 1, count)).astype(np.int64)) if count < total else np.arange(total)


def spread_images(dataset: ArrayDataset, num_images: int, split: str, what: str = "--images") -> tuple[ArrayDataset, np.ndarray]:
    """``num_images`` images evenly spaced over ``dataset`` (:func:`spread_indices`), and their positions.

    Raises:
        UserInputError: fewer than one, or more than the split has.
    """
    if num_images < 1:
        raise UserInputError(f"{what} must be at least 1, got {num_images}.")
    if num_images > len(dataset):
        raise UserInputError(f"{what} {num_images} asks for more images than the {split} split has ({len(dataset)}); "
                             f"pass {what} {len(dataset)} or fewer.")
    indices = spread_indices(len(dataset), num_images)
    return (dataset if len(indices) == len(dataset) else dataset.subset(indices)), indices


def thresholds_over(model: nn.Module, units: list[Unit], dataset: ArrayDataset, quantile: float, batch_size: int,
                    device: str | torch.device) -> FieldThresholds:
    """Each filter's top quantile over every image of ``dataset`` (exact, streaming)."""
    return field_thresholds(model, units, DataLoader(dataset, batch_size=batch_size, shuffle=False), len(dataset),
                            quantile=quantile, device=device)


def stacked_images(dataset: ArrayDataset) -> torch.Tensor:
    """Every image of ``dataset``, normalised, as one (N, C, H, W) tensor."""
    return torch.stack([dataset[index][0] for index in range(len(dataset))])
