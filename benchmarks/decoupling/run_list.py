"""Run one entry of the decoupling run list (runs.yaml), or list them.

    python benchmarks/decoupling/run_list.py                  # every entry: name, script, first words of its notes
    python benchmarks/decoupling/run_list.py NAME [--dry-run] # run one (or print what would run)

Every entry runs from benchmarks/ (its paths, e.g. checkpoints/teacher_resnet20_10ep/..., are relative to it),
with this Python for .py scripts and bash for .sh. An entry with ``start_from`` first copies that kept checkpoint
to the run's ``checkpoints/last.pt`` unless the run already has one, so that running it again resumes it.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

BENCHMARKS = Path(__file__).resolve().parents[1]
RUNS = Path(__file__).resolve().with_name("runs.yaml")


def load_runs(path: Path = RUNS) -> dict[str, dict]:
    """The entries of the run list by name, in their order."""
    return {entry["name"]: entry for entry in yaml.safe_load(path.read_text())}


def command_of(entry: dict) -> list[str]:
    """The command line of an entry, to run from benchmarks/."""
    runner = ["bash"] if entry["script"].endswith(".sh") else [sys.executable]
    return [*runner, entry["script"], *shlex.split(entry["args"])]


def run_dir_of(entry: dict) -> Path:
    """The run directory of a decoupling entry (decouple_resnet20.py writes checkpoints/decouple_<model>_<name>)."""
    return BENCHMARKS / "checkpoints" / entry["name"]


def start_from_kept(entry: dict, dry_run: bool) -> None:
    """Copy the entry's kept checkpoint into its run directory unless the run has started."""
    last = run_dir_of(entry) / "checkpoints" / "last.pt"
    if last.exists():
        return
    print(f"copy {entry['start_from']} -> {last.relative_to(BENCHMARKS)}")
    if not dry_run:
        last.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BENCHMARKS / entry["start_from"], last)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="the entry to run; none: list them")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    args = parser.parse_args()
    runs = load_runs()
    if args.name is None:
        for name, entry in runs.items():
            print(f"{name}  ({entry['script']})  {entry.get('notes', '')[:80]}")
        return 0
    if args.name not in runs:
        close = [name for name in runs if args.name in name][:5]
        print(f"No entry {args.name!r} in {RUNS.name}" + (f"; did you mean {', '.join(close)}?" if close else "."),
              file=sys.stderr)
        return 2
    entry = runs[args.name]
    if entry.get("start_from"):
        start_from_kept(entry, args.dry_run)
    command = command_of(entry)
    print(("(background) " if entry.get("background") else "") + shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(command, cwd=BENCHMARKS)


if __name__ == "__main__":
    sys.exit(main())
