"""Static pruning at the decoupled network's FLOPs: what the same 10-epoch budget gives without gates.

Keeps the round(R·N) filters with the largest |BatchNorm γ| (network slimming's importance) in the
first conv of every residual block of a shared ResNet (20 or 56) — the units the decoupling runs gate —
removes the others physically (``export_pruned``), and fine-tunes the smaller network with the dense
reference's schedule (benchmarks/baselines/baseline_resnet20.py: SGD momentum 0.9, weight decay 5e-4, batch 128,
lr 0.02 cosine, crop + flip, seed 0). It tells whether a decoupling run's gap to the dense reference
comes from the gates or from fine-tuning a network of that size for 10 epochs.

    python benchmarks/static_pruning/static_pruned_resnet20.py [--model resnet20] [--ratio 0.45] [--epochs 10] [--threads 1] [--compile] [--resume]
        [--distill-weight 1 --teacher CHECKPOINT]   # the same distillation the decoupled runs can get
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, WEIGHTS, record_process, results_dir, write_results

from filterscope.methods.semantic_pruning.export import export_pruned
from filterscope.methods.semantic_pruning import PruningMask
from filterscope.methods.distillation import DistillationObjective, Teacher
from filterscope.core.flops import count_costs
from filterscope.analyses.evaluate import evaluate_checkpoint
from filterscope.models import create_model
from filterscope.core.locations import shared_dir
from filterscope.training.train import TrainConfig, train
from filterscope.core.units import find_units

RESULTS = results_dir("static_pruning")


def slimming_mask(model, ratio: float, pattern: str) -> PruningMask:
    """Prune all but the round(ratio·N) largest-|γ| filters of the units matching ``pattern``."""
    pruned = {}
    for unit in find_units(model, (3, 32, 32)):
        mask = np.zeros(unit.out_channels, dtype=bool)
        if fnmatch.fnmatch(unit.name, pattern):
            keep = max(1, round(ratio * unit.out_channels))
            order = np.argsort(-unit.bn.weight.detach().abs().numpy(), kind="stable")
            mask[order[keep:]] = True
        pruned[unit.name] = mask
    return PruningMask(class_index=-1, setting=ratio, mode="static", pruned=pruned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="resnet20", help="shared checkpoint to start from")
    parser.add_argument("--ratio", type=float, default=0.45, help="share of filters kept in each pruned unit")
    parser.add_argument("--pattern", default="layer*.conv1", help="fnmatch pattern of the pruned units")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--distill-weight", type=float, default=0.0, help="λd of distillation from --teacher (0: off)")
    parser.add_argument("--teacher", default=None, help="dense checkpoint of the same model to distil from")
    parser.add_argument("--shared", default=str(shared_dir()))
    args = parser.parse_args()

    shared = Path(args.shared)
    data, weights = shared / "data" / "cifar10-jpeg.zip", shared / "models" / WEIGHTS[args.model]
    dense = create_model(args.model, 10, str(weights))
    mask = slimming_mask(dense, args.ratio, args.pattern)
    pruned = export_pruned(dense, mask)
    dense_flops = count_costs(dense, (3, 32, 32)).total_flops
    pruned_flops = count_costs(pruned, (3, 32, 32)).total_flops
    if (args.distill_weight > 0) != (args.teacher is not None):
        parser.error("--distill-weight > 0 and --teacher go together.")
    name = (f"static_pruned_{args.model}_r{args.ratio:g}" + ("_kd" if args.teacher else "")
            + (f"_{args.epochs}ep" if args.epochs != 10 else ""))  # the 10-epoch runs came first and keep their names
    config = TrainConfig(
        model=args.model, data=str(data), weights=None, epochs=args.epochs, batch_size=128, lr=0.02, momentum=0.9,
        weight_decay=5e-4, schedule="cosine", seed=0, augment=True, run_dir=str(CHECKPOINTS / name), progress=True,
        threads=args.threads, compile=args.compile, resume=args.resume,
    )
    before = evaluate_checkpoint(args.model, str(weights), str(data), split="test", progress=False)["accuracy"]
    processes = record_process(CHECKPOINTS / name, resume=args.resume)
    start = time.time()
    if args.teacher:
        teacher = Teacher(create_model(args.model, 10, args.teacher), weight=args.distill_weight, compile=args.compile)
        result = train(config, model=pruned, objective=DistillationObjective(teacher))
    else:
        result = train(config, model=pruned)
    history = [{k: v for k, v in epoch.items() if not isinstance(v, (list, dict))} for epoch in result.history]
    results = {
        "model": args.model, "pruned_units": args.pattern, "kept_ratio": args.ratio, "importance": "|BN gamma|",
        "dense_flops": dense_flops, "pruned_flops": pruned_flops, "flops_reduction": dense_flops / pruned_flops,
        "dense_test_accuracy_before": before, "test_accuracy": result.final["accuracy"], "epochs": args.epochs,
        "history": history, "wall_seconds": time.time() - start, "seed": 0,
        "wall_seconds_note": "this process only (a resumed run's earlier processes are not counted); see training_seconds",
        "processes": processes,
        "training_seconds": sum(epoch["epoch_seconds"] for epoch in history),  # over every process of a resumed run
        "distill_weight": args.distill_weight, "teacher": args.teacher,
    }
    rows = "\n".join(f"| {e['epoch']} | {e['train_accuracy']:.4f} | {e['test_accuracy']:.4f} |" for e in history)
    table = (f"# Static pruning of {args.model} at {dense_flops / pruned_flops:.2f}× fewer FLOPs, {args.epochs} epochs of fine-tuning\n\n"
             f"Kept the {args.ratio:g} largest-|γ| filters of `{args.pattern}` and removed the rest physically: "
             f"{dense_flops / 1e6:.1f} M → {pruned_flops / 1e6:.1f} M FLOPs"
             f"{f', distillation (λd {args.distill_weight:g}) from `{args.teacher}`' if args.teacher else ''}. Final test top-1 **{result.final['accuracy']:.4f}**.\n\n"
             f"| epoch | train top-1 | test top-1 |\n|---|---|---|\n{rows}\n")
    print(write_results(name, results, table, directory=RESULTS))


if __name__ == "__main__":
    main()
