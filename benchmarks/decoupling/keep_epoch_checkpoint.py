"""Keep a copy of a training run's ``last.pt`` as it stands after a given epoch, for a rerun forked from there.

``train`` keeps only the latest checkpoint; the distilled reruns of epochs 21–30 start from the epoch-20 one.
Run beside the training process: polls ``last.pt`` (reading it only when its modification time changes),
copies it atomically once it holds the epoch, and stops; fails if the run is already past it.

    python benchmarks/decoupling/keep_epoch_checkpoint.py RUN_DIR/checkpoints/last.pt 20 checkpoints/fork_.../last_epoch20.pt
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from filterscope.models.checkpoint import read_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the run's last.pt")
    parser.add_argument("epoch", type=int, help="the epoch whose checkpoint to keep")
    parser.add_argument("target", type=Path, help="where to copy it")
    parser.add_argument("--poll-seconds", type=float, default=20.0)
    args = parser.parse_args()
    seen = None
    while True:
        if args.checkpoint.exists() and args.checkpoint.stat().st_mtime != seen:
            seen = args.checkpoint.stat().st_mtime
            epoch = int(read_checkpoint(args.checkpoint)["epoch"])
            if epoch == args.epoch:
                args.target.parent.mkdir(parents=True, exist_ok=True)
                partial = args.target.with_name(args.target.name + ".partial")
                shutil.copyfile(args.checkpoint, partial)
                os.replace(partial, args.target)  # atomic: a reader never sees half a checkpoint
                print(f"kept epoch {epoch}: {args.target}")
                return 0
            if epoch > args.epoch:
                print(f"{args.checkpoint} already holds epoch {epoch}, past {args.epoch}; nothing kept.", file=sys.stderr)
                return 2
        time.sleep(args.poll_seconds)


if __name__ == "__main__":
    sys.exit(main())
