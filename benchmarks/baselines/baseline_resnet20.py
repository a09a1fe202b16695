"""Dense reference: fine-tune the shared CIFAR-10 ResNet-20 on the JPEG training split.

Schedule (documented here and recorded in the results): 10 epochs, SGD momentum 0.9, weight decay
5e-4, batch 128, peak learning rate 0.02 with cosine decay to zero, random crop (4-pixel padding) and
horizontal flip, seed 0. Evaluated on the JPEG test split after every epoch.

    python benchmarks/baselines/baseline_resnet20.py [--epochs 10] [--shared ../shared] [--compile --threads 1]

Writes benchmarks/baselines/results/baseline_resnet20_cifar10jpeg.{json,md} (other epoch counts:
baseline_resnet20_cifar10jpeg_<N>ep, the reference for decoupled runs of N epochs). The fine-tuned checkpoint goes to
benchmarks/checkpoints/baseline_resnet20/checkpoints/last.pt (kept out of git); its sha256 is recorded,
and re-running this script regenerates it (same seed, same schedule; bit-identical on the same
machine and torch build).

--model resnet56 does the same for the shared ResNet-56 (results/baseline_resnet56_cifar10jpeg*, checkpoints under
benchmarks/checkpoints/baseline_resnet56*).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, WEIGHTS, record_process, results_dir, sha256, write_results

from filterscope.analyses.evaluate import evaluate_checkpoint
from filterscope.core.locations import shared_dir
from filterscope.training.train import TrainConfig, train

RESULTS = results_dir("baselines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="resnet20", help="shared checkpoint to start from")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--shared", default=str(shared_dir()))
    parser.add_argument("--run-dir", default=None, help="default: checkpoints/baseline_<model>[_<N>ep]")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="training steps through torch.compile")
    parser.add_argument("--name", default=None,
                        help="suffix of the results file, so a repeat keeps the reference's results (e.g. teacher)")
    args = parser.parse_args()

    suffix = "" if args.epochs == 10 else f"_{args.epochs}ep"
    run_dir = args.run_dir or str(CHECKPOINTS / f"baseline_{args.model}{suffix}")
    shared = Path(args.shared)
    data = shared / "data" / "cifar10-jpeg.zip"
    weights = shared / "models" / WEIGHTS[args.model]
    before = evaluate_checkpoint(args.model, str(weights), str(data), split="test", progress=False)
    config = TrainConfig(
        model=args.model, data=str(data), weights=str(weights), epochs=args.epochs, batch_size=128,
        lr=args.lr, momentum=0.9, weight_decay=5e-4, schedule="cosine", seed=0, augment=True,
        run_dir=run_dir, resume=args.resume, progress=True, threads=args.threads, compile=args.compile,
    )
    processes = record_process(run_dir, resume=args.resume)
    start = time.time()
    result = train(config)
    wall = time.time() - start
    checkpoint = Path(result.run_dir) / "checkpoints" / "last.pt"
    final = result.final
    results = {
        "model": args.model,
        "data": "cifar10-jpeg.zip",
        "start_checkpoint": weights.name,
        "test_accuracy_before": before["accuracy"],
        "test_accuracy": final["accuracy"],
        "per_class_accuracy": dict(zip(final["classes"], final["per_class_accuracy"])),
        "test_loss": final["loss"],
        "epochs": args.epochs,
        "schedule": {"optimizer": "SGD", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                     "lr": args.lr, "lr_schedule": "cosine", "augment": "random crop pad 4 + flip", "seed": 0},
        "history": result.history,
        "wall_seconds": wall,
        "wall_seconds_note": "includes evaluation after every epoch; a resumed run counts only its own part",
        "processes": processes,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256(checkpoint),
        "compiled": args.compile,
        "regenerate": f"python benchmarks/baselines/baseline_resnet20.py --model {args.model} --epochs {args.epochs}" + (" --compile" if args.compile else ""),
    }
    rows = "\n".join(
        f"| {h['epoch']} | {h['train_accuracy']:.4f} | {h['test_accuracy']:.4f} | {h['epoch_seconds']:.0f} |" for h in result.history
    )
    table = (
        f"# Dense reference: {args.model} fine-tuned on CIFAR-10 JPEG\n\n"
        f"Start (shared checkpoint) test top-1: {before['accuracy']:.4f}; after {args.epochs} epochs: "
        f"{final['accuracy']:.4f}. Training time (sum of the epochs) {sum(h['epoch_seconds'] for h in result.history) / 60:.1f} min"
        + (f"; this resumed process ran {wall / 60:.1f} min" if args.resume else "") + ".\n\n"
        "| epoch | train top-1 | test top-1 | seconds |\n|---|---|---|---|\n" + rows
    )
    print(write_results(f"baseline_{args.model}_cifar10jpeg{suffix}" + (f"_{args.name}" if args.name else ""), results, table, directory=RESULTS))


if __name__ == "__main__":
    main()
