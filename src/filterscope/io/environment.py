"""The versions and the machine behind a run's numbers, kept beside them in ``environment.json``.

One record per verb that wrote into the run directory (the latest run of each), so a report built
elsewhere still says where its numbers were measured.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .run_dir import write_text_atomically

__all__ = ["ENVIRONMENT_NAME", "describe_environment", "read_environment", "record_environment"]

ENVIRONMENT_NAME = "environment.json"
PACKAGES = ("filterscope", "torch", "numpy", "scikit-learn", "matplotlib", "captum", "torch-pruning")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_environment() -> dict[str, Any]:
    """Versions of Python and the packages the numbers depend on, the machine, and the time."""
    import torch

    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "packages": {name: version for name in PACKAGES if (version := _version(name)) is not None},
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join(["filterscope", *sys.argv[1:]]) if Path(sys.argv[0]).name == "filterscope" else None,
    }


def read_environment(run_dir: str | Path) -> dict[str, Any]:
    """``environment.json`` of a run directory ({} when absent or unreadable)."""
    try:
        value = json.loads((Path(run_dir) / ENVIRONMENT_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def record_environment(run_dir: str | Path, verb: str) -> Path:
    """Set ``environment.json[verb]`` to :func:`describe_environment`, keeping the other verbs' records."""
    records = read_environment(run_dir)
    records[verb] = describe_environment()
    target = Path(run_dir) / ENVIRONMENT_NAME
    write_text_atomically(target, json.dumps(records, indent=2) + "\n")
    return target
