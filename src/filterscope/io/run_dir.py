"""The run directory every verb writes: config.yaml, metrics.json, arrays/, figures/, checkpoints/.

An analysis adds its own key to metrics.json and its own files; nothing overwrites another
analysis. Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..core.atomic import atomic_file


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

    def changed_settings(self, config: Any, name: str = "config.yaml", ignore: tuple[str, ...] = ()) -> list[str]:
        """What differs between ``config`` and the settings file ``name`` already in the folder.

        Each difference reads ``key: old -> new`` (nested keys joined by dots); keys in ``ignore``
        are skipped, as is a missing or unreadable file (nothing to compare with).
        """
        target = self.path / name
        try:
            old = yaml.safe_load(target.read_text())
        except (OSError, yaml.YAMLError):
            return []
        if not isinstance(old, dict):
            return []
        changes: list[str] = []
        _compare_settings(old, to_plain(config), "", set(ignore), changes)
        return changes

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


def warn_if_settings_changed(run: RunDir, config: Any, name: str = "config.yaml", ignore: tuple[str, ...] = ()) -> list[str]:
    """Warn, naming each one, when a resumed run's settings differ from those its folder recorded."""
    changes = run.changed_settings(config, name, ignore)
    if changes:
        warnings.warn(
            f"resuming {run.path} with settings changed since its {name} was written ({'; '.join(changes)}); "
            "the checkpoint goes on under the new settings - use a new run directory to train with them from the start.",
            stacklevel=3,
        )
    return changes


def _compare_settings(old: dict, new: dict, prefix: str, ignore: set[str], changes: list[str]) -> None:
    for key in dict.fromkeys([*old, *new]):
        if key in ignore:
            continue
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            _compare_settings(before, after, f"{prefix}{key}.", ignore, changes)
        elif before != after:
            changes.append(f"{prefix}{key}: {before!r} -> {after!r}")
