"""The one check every analysis makes on what a loader yields."""

from __future__ import annotations

from typing import Any

import torch

from .errors import UserInputError


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of a loader batch, or one clear error when the loader yields something else."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise UserInputError("the loader must yield (images, labels) pairs; wrap the data set so that it does.")
    return batch[0], torch.as_tensor(batch[1])
