"""The flags every verb spells the same way, and what every verb does before and after its work.

``--model/--weights/--data/--split/--run-dir/--threads/--device/--batch-size/--json/--quiet`` mean the
same on every verb that has them. Before the expensive part a verb checks its run directory
(:func:`filterscope.io.run_dir.check_run_dir`) and its numbers; after it, a verb that wrote a run
directory builds its ``report.html`` and says where it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..core.errors import UserInputError


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each flag's default (when it has one)."""


def add_model_arguments(parser: argparse.ArgumentParser, *, weights: bool = True) -> None:
    """--model (a registered model) and --weights."""
    from ..models import MODELS

    parser.add_argument("--model", required=True, choices=sorted(MODELS), help="registered model name")
    if weights:
        parser.add_argument("--weights", help="checkpoint path (a decoupled checkpoint is evaluated with its gates)")


def add_data_arguments(parser: argparse.ArgumentParser, *, split_default: str = "test", split_help: str = "data split",
                       eval_split: bool = False) -> None:
    """--data, --split (and --eval-split), --val-fraction."""
    from ..data import SPLITS

    parser.add_argument("--data", required=True, help="registered data set name, or a folder or .zip of split/class/image files")
    parser.add_argument("--split", default=split_default, choices=SPLITS, help=split_help)
    if eval_split:
        parser.add_argument("--eval-split", default="test", choices=SPLITS, help="split the result is evaluated on")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of the training split held out as 'val'")


def _has_flag(parser: argparse.ArgumentParser, flag: str) -> bool:
    """Whether ``parser`` already defines ``flag`` (verbs whose dataclass flags include some shared ones)."""
    return any(flag in action.option_strings for action in parser._actions)


def add_run_dir_arguments(parser: argparse.ArgumentParser, *, default: str | None = None, resume: bool = False,
                          help_text: str = "run directory to write (metrics, arrays, figures, report.html)") -> None:
    """--run-dir and --overwrite (and --resume for verbs that train)."""
    if not _has_flag(parser, "--run-dir"):
        parser.add_argument("--run-dir", default=default, help=help_text)
    parser.add_argument("--overwrite", action="store_true", help="replace what the run directory already holds")
    if resume and not _has_flag(parser, "--resume"):
        parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")


def add_execution_arguments(parser: argparse.ArgumentParser, *, batch_size: int | None = 256, json_output: bool = True) -> None:
    """--batch-size, --device, --threads, --json, --quiet."""
    if batch_size is not None and not _has_flag(parser, "--batch-size"):
        parser.add_argument("--batch-size", type=int, default=batch_size, help="images per batch")
    if not _has_flag(parser, "--device"):
        parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    if not _has_flag(parser, "--threads"):
        parser.add_argument("--threads", type=int, default=None,
                            help="intra-op CPU threads (default: the cores not already busy)")
    if json_output and not _has_flag(parser, "--json"):
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines on stderr")


def check_numbers(args: argparse.Namespace) -> None:
    """One clear error for a batch size, thread count or validation share out of range, before any work."""
    from ..core.threads import check_threads

    batch_size = getattr(args, "batch_size", None)
    if batch_size is not None and batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}.")
    check_threads(getattr(args, "threads", None))
    val_fraction = getattr(args, "val_fraction", None)
    if val_fraction is not None and not 0.0 <= val_fraction < 1.0:
        raise UserInputError(f"--val-fraction must be in [0, 1), got {val_fraction}.")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress on stderr unless --quiet: bars on a terminal, a plain line every 30 s elsewhere (logs).

    tqdm reads its defaults from ``TQDM_*`` environment variables; off a terminal the interval becomes
    30 s and the bar a plain line, so a log file gets a readable line now and then instead of nothing.
    """
    if getattr(args, "quiet", False):
        return False
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "30")
        os.environ.setdefault("TQDM_NCOLS", "100")
        os.environ.setdefault("TQDM_ASCII", "True")
    return True


def prepare(args: argparse.Namespace, *, analysis: str | None = None, run_dir_required: bool = False) -> None:
    """Everything a verb checks and sets before its expensive part: numbers, threads, the run directory."""
    from ..core.threads import use_threads
    from ..io.run_dir import check_run_dir

    from ..models.checkpoint import check_checkpoint_exists

    check_numbers(args)
    if getattr(args, "weights", None):
        check_checkpoint_exists(args.weights)  # said now; its contents are checked where it is loaded, before the data
    use_threads(getattr(args, "threads", None))
    run_dir = getattr(args, "run_dir", None)
    if run_dir is None and run_dir_required:
        raise UserInputError("--run-dir is required for this verb.")
    check_run_dir(run_dir, resume=bool(getattr(args, "resume", False)), overwrite=bool(getattr(args, "overwrite", False)),
                  analysis=analysis)


def finish(run_dir: Any, verb: str) -> str | None:
    """Record the versions and the machine (``environment.json[verb]``), build ``report.html`` of the run
    directory the verb wrote and say where it is (on stderr, so that --json keeps stdout one JSON object);
    the path, or None when the verb wrote no run directory."""
    from ..io.environment import record_environment
    from ..report.html import build_report

    if run_dir is None:
        return None
    record_environment(run_dir, verb)
    path = build_report(run_dir)
    print(f"report: {path}", file=sys.stderr)
    return str(path)


def add_checkpoint_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The decoupled checkpoint (or its run directory) of a verb that reads one: ``--weights``, as every verb
    names a checkpoint, or positionally (the older form, kept as an alias)."""
    parser.add_argument("checkpoint", nargs="?", metavar="RUN_OR_CHECKPOINT", help=f"{help_text} (or give it as --weights)")
    parser.add_argument("--weights", dest="weights_option", metavar="RUN_OR_CHECKPOINT", help=help_text)


def resolve_checkpoint_argument(args: argparse.Namespace) -> str:
    """The checkpoint given by ``--weights`` or positionally; one sentence when there is none or two."""
    given = [value for value in (args.checkpoint, args.weights_option) if value is not None]
    if not given:
        raise UserInputError("the decoupled checkpoint is required: give it as --weights (a checkpoint file or a "
                             "`filterscope decouple` run directory).")
    if len(given) == 2 and given[0] != given[1]:
        raise UserInputError("give the checkpoint once, either as --weights or positionally, not both.")
    args.checkpoint = given[0]
    return given[0]
