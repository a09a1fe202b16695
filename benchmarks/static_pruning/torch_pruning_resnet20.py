"""Torch-Pruning static baseline at the decoupled checkpoint's FLOPs, fine-tuned and distilled as the decoupled recipe.

The statically pruned model of the engine latency comparison (issue #35): Torch-Pruning's ``MetaPruner`` with
``BNScaleImportance`` (network slimming's |BatchNorm γ|, each layer's scores divided by their mean, Torch-Pruning's
default) removes output filters of the first conv of every residual block only — the units the decoupled model
gates — with ONE global pruning ratio (``global_pruning=True``: the filters of all nine blocks are ranked together,
so each block keeps its own number). Every other conv and the linear layer are ignored, so the residual stream keeps
its 16/32/64 channels. The ratio is found by bisection so that the pruned network's FLOPs per 32×32 image
(``count_flops_reference``, i.e. ``torch.utils.flop_counter``) come as close as they can to the shipped decoupled
checkpoint's 40.33 M (``checkpoints/resnet20-cifar10-2x-seed1.pt``, 2.01× fewer than the dense 81.1 M).

The pruned network is fine-tuned with the decoupled recipe's schedule and length (30 epochs, SGD lr 0.02 momentum
0.9 weight decay 5e-4 cosine, batch 128, crop + flip, seed 0), distilled at every step from the 10-epoch dense
teacher (λd 1, T 4), as ``static_pruned_resnet20.py --distill-weight 1`` does. Unlike that script's uniform keep
ratio (whose 0.5 gives 1.98×, and the same channels as Torch-Pruning's uniform 0.5 would), the global ranking
reaches the target FLOPs to within 0.1 % and lets the blocks keep different widths.

At the end it writes the results (``results/<name>.{json,md}``) and the pruned network as a plain checkpoint,
``checkpoints/resnet20-cifar10-torchpruning-2x.pt`` = ``{"channels": {conv: kept filters}, "state_dict": ...}``,
which :func:`load_torch_pruned` rebuilds without Torch-Pruning (the engine benchmark times it that way).

    python benchmarks/static_pruning/torch_pruning_resnet20.py [--epochs 30] [--threads 1] [--compile] [--resume]
        [--teacher CHECKPOINT] [--distill-weight 1] [--target-flops 40332225 | --ratio R] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import BENCHMARKS, CHECKPOINTS, WEIGHTS, record_process, results_dir, sha256, write_results

from filterscope.analyses.evaluate import evaluate
from filterscope.core.errors import UserInputError
from filterscope.core.flops import count_costs, count_flops_reference
from filterscope.core.locations import shared_dir
from filterscope.data import load_dataset
from filterscope.methods.distillation import DistillationObjective, Teacher
from filterscope.models import create_model, model_spec
from filterscope.models.checkpoint import read_checkpoint, save_atomically
from filterscope.models.pruned import load_pruned
from filterscope.training.train import TrainConfig, train

RESULTS = results_dir("static_pruning")
REPOSITORY = BENCHMARKS.parent
PATTERN = "layer*.conv1"  # the units the decoupled model gates
# Mean FLOPs per test image of the shipped decoupled checkpoint (checkpoints/resnet20-cifar10-2x-seed1.pt; its run's
# JSON, decoupling/results/decouple_resnet20_..._flops201_30ep_pfkd10_seed1.json, "mean_flops"): 2.011× fewer than 81.1 M.
DECOUPLED_RESNET20_FLOPS = 40_332_225
# Bracket of the global ratio searched: FLOPs fall as the ratio grows; 0 keeps everything, 0.9 prunes far past 2×.
SEARCH_BRACKET = (0.0, 0.9)
SEARCH_STEPS = 30  # the bracket halves 30 times: far below one filter's share (1/336) of the gated filters


def pruned_units(model: nn.Module, pattern: str = PATTERN) -> list[str]:
    """Names of the convs Torch-Pruning may shrink (their output channels): those matching ``pattern``."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and fnmatch.fnmatch(name, pattern)]


def torch_prune(dense: nn.Module, ratio: float, pattern: str = PATTERN) -> nn.Module:
    """A pruned copy of ``dense`` (left unchanged): Torch-Pruning, global |BN γ| ranking of ``pattern`` convs' filters.

    Args:
        dense: the network to prune (a CIFAR ResNet; only ``pattern`` convs lose output channels).
        ratio: Torch-Pruning's global ``pruning_ratio``, the share of the ``pattern`` convs' filters removed.
        pattern: fnmatch pattern of the prunable convs.
    """
    import torch_pruning as tp  # only here: loading a saved pruned network needs no Torch-Pruning

    model = copy.deepcopy(dense).eval()
    targets = set(pruned_units(model, pattern))
    ignored = [module for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in targets]
    pruner = tp.pruner.MetaPruner(
        model, torch.zeros(1, 3, 32, 32), importance=tp.importance.BNScaleImportance(),
        pruning_ratio=ratio, global_pruning=True, ignored_layers=ignored,
    )
    pruner.step()
    check_pruned_shape(dense, model, targets)
    return model


def check_pruned_shape(dense: nn.Module, pruned: nn.Module, targets: set[str]) -> None:
    """Raise unless only the ``targets``' filters (and the next conv's matching inputs) were removed."""
    dense_convs = {name: module for name, module in dense.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))}
    for name, module in pruned.named_modules():
        if name not in dense_convs:
            continue
        before = dense_convs[name]
        out_before = before.out_channels if isinstance(before, nn.Conv2d) else before.out_features
        out_after = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        if name not in targets and out_after != out_before:
            raise RuntimeError(f"Torch-Pruning changed the output width of {name} ({out_before} -> {out_after}), "
                               "a layer that should be ignored: the residual stream must stay whole.")
        if name in targets and not 0 < out_after <= out_before:
            raise RuntimeError(f"{name} kept {out_after} filters of {out_before}.")
    for name in targets:  # conv1 -> bn1 -> conv2 of the same block agree
        block = pruned.get_submodule(name.rsplit(".", 1)[0])
        kept = block.conv1.out_channels
        if block.bn1.num_features != kept or block.conv2.in_channels != kept:
            raise RuntimeError(f"{name}: bn1 has {block.bn1.num_features} and conv2 reads {block.conv2.in_channels} "
                               f"channels, conv1 makes {kept}.")
    left = [name for name, module in pruned.named_modules() if module._forward_hooks or module._forward_pre_hooks]
    if left:
        raise RuntimeError(f"Torch-Pruning left hooks on {left}.")


def kept_channels(model: nn.Module, pattern: str = PATTERN) -> dict[str, int]:
    """{conv name: output channels} of the ``pattern`` convs."""
    return {name: model.get_submodule(name).out_channels for name in pruned_units(model, pattern)}


def search_ratio(dense: nn.Module, target_flops: int) -> tuple[float, int, list[dict]]:
    """The global ratio whose pruned network's FLOPs are closest to ``target_flops``, found by bisection.

    FLOPs fall in steps as the ratio grows (one filter at a time). The bisection narrows [lo, hi] to the step that
    crosses the target (FLOPs(lo) > target >= FLOPs(hi)) and takes the closer side; that side's ratio is then
    written with the fewest decimals that still give the same network, so that it reads well and sits away from
    the step's edge (where float rounding inside Torch-Pruning could tip it).

    Returns:
        (ratio, its FLOPs, every probe as {ratio, flops}).
    """
    probes: list[dict] = []

    def prune_at(ratio: float) -> tuple[int, dict[str, int]]:
        model = torch_prune(dense, ratio)
        flops = count_flops_reference(model)
        probes.append({"ratio": ratio, "flops": flops})
        return flops, kept_channels(model)

    lo, hi = SEARCH_BRACKET
    (flops_lo, channels_lo), (flops_hi, channels_hi) = prune_at(lo), prune_at(hi)
    if not flops_lo > target_flops >= flops_hi:
        raise UserInputError(f"target {target_flops} FLOPs is outside what ratios {lo}..{hi} reach "
                             f"({flops_hi}..{flops_lo}); pass a target in that range or --ratio.")
    for _ in range(SEARCH_STEPS):
        middle = (lo + hi) / 2
        flops, channels = prune_at(middle)
        if flops > target_flops:
            lo, flops_lo, channels_lo = middle, flops, channels
        else:
            hi, flops_hi, channels_hi = middle, flops, channels
    if abs(flops_lo - target_flops) <= abs(flops_hi - target_flops):
        ratio, flops, channels = lo, flops_lo, channels_lo
    else:
        ratio, flops, channels = hi, flops_hi, channels_hi
    for digits in range(2, 13):
        rounded = round(ratio, digits)
        if prune_at(rounded) == (flops, channels):
            return rounded, flops, probes
    return ratio, flops, probes


def load_torch_pruned(path: str | Path) -> nn.Module:
    """The pruned network saved by this script, rebuilt without Torch-Pruning (:func:`filterscope.models.pruned.load_pruned`)."""
    return load_pruned(path)


def torch_pruning_version() -> str:
    """The installed distribution's version (the module's own ``__version__`` lags it: 1.6.1 says 1.6.0)."""
    from importlib.metadata import version

    return version("torch-pruning")


def test_split(data: str, model_name: str):
    spec = model_spec(model_name)
    return load_dataset(data, "test", mean=spec.mean, std=spec.std, expected_image_shape=spec.input_shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="resnet20", help="shared checkpoint to start from")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-flops", type=int, default=DECOUPLED_RESNET20_FLOPS,
                        help="FLOPs per 32×32 image to reach (default: the shipped decoupled ResNet-20's 40,332,225)")
    target.add_argument("--ratio", type=float, default=None, help="Torch-Pruning's global pruning ratio (skips the search)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--distill-weight", type=float, default=1.0, help="λd of distillation from --teacher (0: off)")
    parser.add_argument("--teacher", default=str(CHECKPOINTS / "teacher_resnet20_10ep" / "checkpoints" / "last.pt"),
                        help="dense checkpoint of the same model to distil from (default: the run list's 10-epoch teacher)")
    parser.add_argument("--name", default=None, help="results name (default torch_pruning_<model>_<epochs>ep[_nokd])")
    parser.add_argument("--run-dir", default=None, help="training run directory (default benchmarks/checkpoints/<name>)")
    parser.add_argument("--output", default=None,
                        help="where the pruned network goes (default checkpoints/<model>-cifar10-torchpruning-2x.pt)")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None, help="stop each epoch early (smoke checks)")
    parser.add_argument("--shared", default=str(shared_dir()))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shared = Path(args.shared)
    data, weights = shared / "data" / "cifar10-jpeg.zip", shared / "models" / WEIGHTS[args.model]
    distill = args.distill_weight > 0
    if distill and not Path(args.teacher).is_file():
        parser.error(f"teacher checkpoint {args.teacher} does not exist: train it (run list entry "
                     "baseline_resnet20_cifar10jpeg_teacher_rerun3), pass --teacher, or --distill-weight 0.")
    name = args.name or f"torch_pruning_{args.model}_{args.epochs}ep" + ("" if distill else "_nokd")
    run_dir = Path(args.run_dir) if args.run_dir else CHECKPOINTS / name
    output = Path(args.output) if args.output else REPOSITORY / "checkpoints" / f"{args.model}-cifar10-torchpruning-2x.pt"

    dense = create_model(args.model, 10, str(weights))
    dense_flops = count_flops_reference(dense)
    search_start = time.time()
    if args.ratio is None:
        ratio, pruned_flops, probes = search_ratio(dense, args.target_flops)
    else:
        ratio, probes = args.ratio, []
        pruned_flops = count_flops_reference(torch_prune(dense, ratio))
    pruned = torch_prune(dense, ratio)
    search_seconds = time.time() - search_start
    channels = kept_channels(pruned)
    dense_channels = kept_channels(dense)
    static_flops = count_costs(pruned, (3, 32, 32)).total_flops  # filterscope's own count (the sibling script's)
    print(f"global ratio {ratio:.6f}: {pruned_flops:,} FLOPs ({dense_flops / pruned_flops:.4f}× fewer than {dense_flops:,}; "
          f"target {args.target_flops:,}); kept {channels}", flush=True)

    last = run_dir / "checkpoints" / "last.pt"
    if args.resume and last.exists():  # the search is deterministic; make sure it rebuilt the network that was trained
        recorded = read_checkpoint(last).get("torch_pruning_channels")
        if recorded is not None and recorded != channels:
            raise UserInputError(f"{last} was trained with channels {recorded}, these flags prune to {channels}: "
                                 "resume with the same flags (or --ratio) as the run started with.")
    test_set = test_split(str(data), args.model)
    test_loader = DataLoader(test_set, batch_size=256, shuffle=False)
    before_dense = evaluate(dense, test_loader, 10, progress=False).accuracy
    before_pruned = evaluate(pruned, test_loader, 10, progress=False).accuracy

    config = TrainConfig(
        model=args.model, data=str(data), weights=None, epochs=args.epochs, batch_size=128, lr=0.02, momentum=0.9,
        weight_decay=5e-4, schedule="cosine", seed=0, augment=True, run_dir=str(run_dir), progress=True,
        threads=args.threads, compile=args.compile, resume=args.resume, max_steps_per_epoch=args.max_steps_per_epoch,
    )
    processes = record_process(run_dir, resume=args.resume)
    start = time.time()
    extra = lambda model: {"torch_pruning_channels": kept_channels(model)}  # noqa: E731 (checked on --resume)
    if distill:
        teacher = Teacher(create_model(args.model, 10, args.teacher), weight=args.distill_weight, compile=args.compile)
        result = train(config, model=pruned, objective=DistillationObjective(teacher), checkpoint_extra=extra)
    else:
        result = train(config, model=pruned, checkpoint_extra=extra)
    trained = result.model.eval()

    payload = {
        "format": "filterscope.torch_pruned.v1", "model": args.model, "num_classes": 10, "channels": channels,
        "state_dict": {key: value.detach().cpu() for key, value in trained.state_dict().items()},
        "pruning_ratio": ratio, "flops": pruned_flops, "dense_flops": dense_flops,
        "test_accuracy": result.final["accuracy"], "epochs": args.epochs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(payload, output)
    reloaded = load_torch_pruned(output)
    images = torch.stack([test_set[index][0] for index in range(256)])
    with torch.no_grad():
        logits_equal = bool(torch.equal(reloaded(images), trained(images)))
    reloaded_accuracy = evaluate(reloaded, test_loader, 10, progress=False).accuracy
    if not logits_equal or reloaded_accuracy != result.final["accuracy"]:
        raise RuntimeError(f"{output} does not reload as the trained network (logits equal: {logits_equal}, "
                           f"accuracy {reloaded_accuracy} vs {result.final['accuracy']}).")

    history = [{k: v for k, v in epoch.items() if not isinstance(v, (list, dict))} for epoch in result.history]
    search = None if args.ratio is not None else {
        "method": "bisection on the global ratio, closer side of the step that crosses the target",
        "bracket": list(SEARCH_BRACKET), "steps": SEARCH_STEPS, "target_flops": args.target_flops,
        "target_source": ("mean FLOPs of checkpoints/resnet20-cifar10-2x-seed1.pt"
                          if args.target_flops == DECOUPLED_RESNET20_FLOPS else "--target-flops"),
        "probes": probes, "seconds": search_seconds,
    }
    results = {
        "model": args.model, "pruner": "torch_pruning.pruner.MetaPruner", "torch_pruning": torch_pruning_version(),
        "importance": "torch_pruning.importance.BNScaleImportance (|BN gamma|, p=1, group_reduction mean, normalizer mean)",
        "global_pruning": True, "pruned_units": PATTERN,
        "ignored_layers": "every other conv (stem, layer*.conv2) and the linear layer",
        "pruning_ratio": ratio, "pruning_ratio_scope": "one global ratio (global_pruning: all gated filters ranked together)",
        "ratio_search": search,
        "kept_channels": channels, "dense_channels": dense_channels,
        "pruned_channels": {unit: dense_channels[unit] - kept for unit, kept in channels.items()},
        "kept_filters": sum(channels.values()), "gated_filters": sum(dense_channels.values()),
        "flops_counter": "filterscope.core.flops.count_flops_reference (torch.utils.flop_counter), batch 1, 3x32x32",
        "dense_flops": dense_flops, "pruned_flops": pruned_flops, "flops_reduction": dense_flops / pruned_flops,
        "pruned_flops_count_costs": static_flops,
        "dense_test_accuracy_before": before_dense, "pruned_test_accuracy_before_finetune": before_pruned,
        "test_accuracy": result.final["accuracy"], "top1": result.final["accuracy"], "epochs": args.epochs,
        "max_steps_per_epoch": args.max_steps_per_epoch,
        "schedule": {"optimizer": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                     "batch_size": 128, "augment": True},
        "history": history, "wall_seconds": time.time() - start, "seed": 0,
        "wall_seconds_note": "this process only (a resumed run's earlier processes are not counted); see training_seconds",
        "processes": processes,
        "training_seconds": sum(epoch["epoch_seconds"] for epoch in history),  # over every process of a resumed run
        "distill_weight": args.distill_weight if distill else 0.0, "distill_temperature": 4.0 if distill else None,
        "distill_every_step": distill, "teacher": args.teacher if distill else None,
        "teacher_sha256": sha256(args.teacher) if distill else None,
        "run_dir": str(run_dir), "pruned_checkpoint": str(output), "pruned_checkpoint_sha256": sha256(output),
        "reload_logits_equal": logits_equal, "reload_test_accuracy": reloaded_accuracy,
    }
    rows = "\n".join(f"| {e['epoch']} | {e['train_accuracy']:.4f} | {e['test_accuracy']:.4f} |" for e in history)
    counts = ", ".join(f"{unit.removeprefix('layer')} {kept}/{dense_channels[unit]}" for unit, kept in channels.items())
    table = (f"# Torch-Pruning static baseline: {args.model} at {dense_flops / pruned_flops:.2f}× fewer FLOPs, "
             f"{args.epochs} epochs of fine-tuning\n\n"
             f"Torch-Pruning {torch_pruning_version()} MetaPruner, BNScaleImportance, one global ratio {ratio:.4f} over `{PATTERN}` "
             f"(every other layer ignored): {dense_flops / 1e6:.1f} M → {pruned_flops / 1e6:.2f} M FLOPs "
             f"(target {args.target_flops / 1e6:.2f} M); kept filters {counts}"
             f"{f'; distillation (λd {args.distill_weight:g}, T 4, every step) from `{args.teacher}`' if distill else ''}. "
             f"Before fine-tuning {before_pruned:.4f}; final test top-1 **{result.final['accuracy']:.4f}**. "
             f"Pruned network: `{output.name}` (SHA-256 `{sha256(output)[:16]}…`).\n\n"
             f"| epoch | train top-1 | test top-1 |\n|---|---|---|\n{rows}\n")
    print(write_results(name, results, table, directory=RESULTS))


if __name__ == "__main__":
    try:
        main()
    except UserInputError as error:  # one sentence naming the fix, not a traceback
        sys.exit(f"{Path(__file__).name}: {error}")
