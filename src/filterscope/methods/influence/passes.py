"""One pass over a loader whose first batch is needed before the pass (to probe the model with it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from ...core.errors import UserInputError

__all__ = ["class_scores", "first_and_every_batch"]


def first_and_every_batch(loader: Iterable, desc: str, progress: bool) -> tuple[Any, Iterator]:
    """The loader's first batch, and an iterator over every batch (the first one included), behind a progress bar.

    Raises:
        UserInputError: The loader yields no batch.
    """
    batches = iter(tqdm(loader, desc=desc, disable=not progress, leave=False))
    first = next(batches, None)
    if first is None:
        raise UserInputError("the loader yielded no batches; pass a data split with images.")
    return first, _chain(first, batches)


def _chain(first: Any, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def class_scores(output: Any) -> torch.Tensor:
    """The class scores of a model's output: the output itself, or the first element of a tuple or list."""
    return output[0] if isinstance(output, (tuple, list)) else output
