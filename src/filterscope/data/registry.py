"""The registry of named data sets: the single list of names the CLI offers.

A data set is registered as a function ``loader(split, root) -> ArrayDataset`` where ``split`` is
``"train"`` or ``"test"`` and ``root`` is an optional folder to read (or download) the files from.
The returned data set carries the data set's conventional ``mean``/``std``; validation splits,
the caller's normalisation and augmentation are applied by :func:`filterscope.data.load_dataset`.

Example::

    @register_dataset("my_data")
    def my_data(split: str, root: Path | None) -> ArrayDataset:
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from .arrays import ArrayDataset

DatasetLoader: TypeAlias = Callable[[str, "Path | None"], ArrayDataset]

DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator that adds a loader to :data:`DATASETS` under ``name``.

    Raises:
        ValueError: If ``name`` is already registered (a programming error, not user input).
    """

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in DATASETS:
            raise ValueError(f"a data set named {name!r} is already registered")
        DATASETS[name] = loader
        return loader

    return decorator
