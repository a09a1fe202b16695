"""Where filterscope finds the shared data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    """The folder with the real data and checkpoints (``FILTERSCOPE_SHARED``, default ``../shared``)."""
    return Path(os.environ.get("FILTERSCOPE_SHARED", "../shared")).expanduser()


def cache_dir() -> Path:
    """The folder for decoded data sets and downloads (``FILTERSCOPE_CACHE``, default ``~/.cache/filterscope``)."""
    path = Path(os.environ.get("FILTERSCOPE_CACHE", Path.home() / ".cache" / "filterscope")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
