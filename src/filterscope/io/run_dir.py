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
from ..core.errors import UserInputError


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
        return RunDir.peek_metrics(self.path)

    @staticmethod
    def peek_metrics(path: str | os.PathLike) -> dict[str, Any]:
        """``metrics.json`` of the folder ``path`` ({} when there is none), without creating the folder."""
        target = Path(path) / "metrics.json"
        return json.loads(target.read_text()) if target.is_file() else {}

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


#: What marks a folder as holding a finished or started run of a verb that trains.
RUN_MARKERS = ("checkpoints/last.pt", "config.yaml", "metrics.json")


def check_run_dir(path: str | os.PathLike | None, *, resume: bool = False, overwrite: bool = False,
                  analysis: str | None = None) -> Path | None:
    """Refuse, before any computation, a run directory that would lose work or cannot be written.

    Args:
        path: the ``--run-dir``; None means the verb writes no run directory (nothing to check).
        resume: the verb continues the run already in ``path`` (it must be there).
        overwrite: the caller asked to replace what ``path`` holds.
        analysis: for verbs that add one analysis to an existing run (``metrics.json[analysis]``):
            the run may hold other analyses, but not this one unless ``overwrite``. None for verbs that
            train, which own the whole folder.

    Returns:
        The path, checked; nothing is created or removed here.

    Raises:
        UserInputError: ``path`` is a file, is not writable, holds a run that would be replaced, or
            ``resume`` names a folder with nothing to resume.
    """
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"--run-dir {str(path)!r} is a file, not a folder; give a folder path (it is created if missing).")
    if resume and overwrite:
        raise UserInputError("--resume and --overwrite contradict each other; give one of them.")
    existing = [marker for marker in RUN_MARKERS if (path / marker).exists()]
    if resume and analysis is None and not (path / "checkpoints" / "last.pt").exists():
        raise UserInputError(f"--resume: {str(path)!r} holds no checkpoints/last.pt to resume; check the path, or drop "
                             "--resume to start a new run there.")
    if analysis is None and existing and not (resume or overwrite):
        raise UserInputError(f"--run-dir {str(path)!r} already holds a run ({', '.join(existing)}); pass --resume to continue "
                             "it, --overwrite to replace it, or choose a new --run-dir.")
    if analysis is not None and not overwrite and analysis in RunDir.peek_metrics(path):
        raise UserInputError(f"--run-dir {str(path)!r} already holds a {analysis!r} analysis; pass --overwrite to replace "
                             "it, or choose a new --run-dir.")
    check_writable(path)
    return path


def check_writable(path: str | os.PathLike, what: str = "--run-dir") -> None:
    """One clear error, before any work, when the folder ``path`` (created later if missing) cannot be written.

    The nearest existing ancestor must be a folder in which a file can be created. Permission bits alone do
    not say so: root ignores them, and some file systems (``/proc``, an immutable or read-only mount) refuse
    new entries whatever they say, so a nameless temporary file is created there and dropped (on Linux it
    never appears in the folder).
    """
    import tempfile

    path = Path(path)
    folder = path
    while not folder.exists():  # the nearest existing ancestor must let us create the rest
        folder = folder.parent
    if not folder.is_dir():
        raise UserInputError(f"{what} {str(path)!r} cannot be created: {str(folder)!r} is a file, not a folder; "
                             "give a path whose folders are folders.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserInputError(f"{what} {str(path)!r} cannot be written ({str(folder)!r} is read-only); choose a writable folder.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserInputError(f"{what} {str(path)!r} cannot be written (no file can be created in {str(folder)!r}: "
                             f"{error.strerror}); choose a writable folder.") from None
