"""A registered model with its checkpoint, on splits of a data set: what every CLI analysis starts from."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data import load_dataset
from ..data.arrays import ArrayDataset
from ..core.distributed import resolve_device
from ..core.errors import UserInputError
from ..models import ModelSpec, create_model, model_spec
from ..methods.decoupling.checkpoint import DECOUPLED_FORMAT
from ..models.checkpoint import read_checkpoint


@dataclass
class Workload:
    """The model (evaluation mode, on ``device``), its registry spec and the requested splits."""

    model: nn.Module
    spec: ModelSpec
    device: torch.device
    splits: dict[str, ArrayDataset]

    @property
    def classes(self) -> list[str]:
        return list(next(iter(self.splits.values())).classes)


def load_workload(model_name: str, weights: str | None, data: str, splits: tuple[str, ...], *,
                  val_fraction: float = 0.0, batch_size: int = 1, device: str = "cpu") -> Workload:
    """Build ``model_name`` with ``weights`` and load ``splits`` of ``data`` without augmentation,
    normalised as the model expects; bad input fails here, before any long pass."""
    if batch_size < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch_size}.")
    spec = model_spec(model_name)
    torch_device = resolve_device(device)
    if weights is not None:  # a missing, unreadable or decoupled file fails now, not after the data is decoded
        if read_checkpoint(weights).get("format") == DECOUPLED_FORMAT:
            raise UserInputError(
                f"{weights!r} is a decoupled checkpoint; this analysis reads a plain network: pass the checkpoint it "
                "was decoupled from, or use `filterscope eval` (accuracy with its gates) and `filterscope paths` "
                "(its calculation paths) on the decoupled one.")
    common = dict(mean=spec.mean, std=spec.std, val_fraction=val_fraction, expected_image_shape=spec.input_shape)
    datasets = {split: load_dataset(data, split, augment=False, **common) for split in splits}
    num_classes = len(datasets[splits[0]].classes)
    model = create_model(model_name, num_classes, weights).to(torch_device).eval()
    return Workload(model=model, spec=spec, device=torch_device, splits=datasets)
