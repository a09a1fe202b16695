"""The run directory every verb writes: config.yaml, metrics.json, arrays/, figures/, checkpoints/.

An analysis adds its own key to metrics.json and its own files; nothing overwrites another
analysis. Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_file


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_file(path, binary=False) as stream:
        stream.write(text)


def to_plain(value: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars → JSON/YAML-friendly Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class RunDir:
    """One folder a user can keep, share and re-open."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def arrays(self) -> Path:
        (self.path / "arrays").mkdir(exist_ok=True)
        return self.path / "arrays"

    @property
    def figures(self) -> Path:
        (self.path / "figures").mkdir(exist_ok=True)
        return self.path / "figures"

    def write_config(self, config: Any, name: str = "config.yaml") -> Path:
        target = self.path / name
        write_text_atomically(target, yaml.safe_dump(to_plain(config), sort_keys=False))
        return target

    def read_metrics(self) -> dict[str, Any]:
        target = self.path / "metrics.json"
        return json.loads(target.read_text()) if target.exists() else {}

    def update_metrics(self, key: str, value: Any) -> Path:
        """Set ``metrics.json[key] = value``, keeping every other analysis's keys."""
        metrics = self.read_metrics()
        metrics[key] = to_plain(value)
        target = self.path / "metrics.json"
        write_text_atomically(target, json.dumps(metrics, indent=2) + "\n")
        return target
