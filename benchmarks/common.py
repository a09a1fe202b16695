"""What every benchmark records beside its numbers: machine, versions, seed, command."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
# Run directories of every study, kept in one place because studies start from each other's checkpoints
# (a teacher trained by baselines/, a decoupled run measured by threshold/ or path_class_information/).
CHECKPOINTS = BENCHMARKS / "checkpoints"  # ignored by git
# The shared pretrained checkpoints (../shared/models, see DATA.md): the one list of the models benchmarks start from.
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}


def results_dir(study: str) -> Path:
    """Where the study ``benchmarks/<study>/`` keeps its per-run results (JSON, markdown, figures)."""
    return BENCHMARKS / study / "results"


def model_title(name: str) -> str:
    """How tables and figures spell a model of WEIGHTS: resnet56 → ResNet-56."""
    return name.replace("resnet", "ResNet-")

# The benchmarks find ../shared beside the repository whatever folder they are started from.
os.environ.setdefault("FILTERSCOPE_SHARED", str(Path(__file__).resolve().parents[2] / "shared"))


def machine() -> dict:
    import numpy
    import torch

    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.cuda.is_available(),
    }


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_tree_changed() -> bool:
    """Whether tracked files differ from HEAD (the code that runs is then not exactly ``git_commit()``)."""
    try:
        return bool(subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], text=True,
                                            stderr=subprocess.DEVNULL).strip())
    except (OSError, subprocess.CalledProcessError):
        return False


# Taken when a benchmark starts, not when it writes its results hours later (commits may land meanwhile).
COMMIT_AT_START = git_commit()
CHANGED_AT_START = git_tree_changed()


def command_line() -> str:
    """How this benchmark was started: ``python script.py --flags ...``."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def record_process(run_dir: str | Path, resume: bool) -> list[dict]:
    """Add this process to ``run_dir/benchmark_processes.json`` and return every process of the run so far.

    A long run resumed across sessions is trained by several processes, possibly on different commits,
    while its results JSON is written by the last one alone; this list names each of them: commit,
    whether the tracked files differed from it, command, start time, and the epoch it resumed after
    (0: from the start; a checkpoint copied in from another run counts as resumed).
    """
    from filterscope.models.checkpoint import read_checkpoint
    from filterscope.io.run_dir import write_text_atomically

    run_dir = Path(run_dir)
    log = run_dir / "benchmark_processes.json"
    processes = json.loads(log.read_text()) if log.exists() else []
    last = run_dir / "checkpoints" / "last.pt"
    processes.append({
        "git_commit": COMMIT_AT_START,
        "git_uncommitted_changes_at_start": CHANGED_AT_START,
        "command": command_line(),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed_after_epoch": int(read_checkpoint(last).get("epoch", 0)) if resume and last.exists() else 0,
    })
    write_text_atomically(log, json.dumps(processes, indent=2) + "\n")
    return processes


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_results(name: str, results: dict, table: str, indent: int | None = 2, *, directory: Path) -> Path:
    """Write ``<directory>/<name>.json`` (with machine, versions, commit, command, time) and ``<directory>/<name>.md``.

    ``directory`` is the study's results folder, ``results_dir("<study>")``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": command_line(),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": COMMIT_AT_START,
        "git_uncommitted_changes_at_start": CHANGED_AT_START,
        "machine": machine(),
        **results,
    }
    target = directory / f"{name}.json"
    target.write_text(json.dumps(payload, indent=indent) + "\n")  # indent None: one line, for large results
    (directory / f"{name}.md").write_text(table.rstrip() + "\n")
    return target
