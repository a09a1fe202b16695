"""Decoupled ResNet-20 on CIFAR-10 JPEG against its dense fine-tuned reference.

Each variant starts from the shared ResNet-20 checkpoint and uses the dense reference's schedule
(benchmarks/baselines/baseline_resnet20.py: SGD momentum 0.9, weight decay 5e-4, batch 128, lr 0.02 cosine,
crop + flip, seed 0) for the same number of epochs, with the decoupling losses on top. Accuracy,
FLOPs and filter states are measured with evaluation (hard, noise-free) gates on the test split.

    python benchmarks/decoupling/decouple_resnet20.py --variant r05 [--epochs 10]   # one run → results/decouple_resnet20_r05.json
    python benchmarks/decoupling/decouple_resnet20.py --table                       # all runs → results/decouple_resnet20.md

The same on the shared ResNet-56: --model resnet56 (results/decouple_resnet56_*.json, --table --model resnet56),
against baseline_resnet20.py --model resnet56 and static_pruned_resnet20.py --model resnet56 (the file names
stay as the runs recorded in results/ called them).

Variants (see VARIANTS): r0 and r05 are the main comparison (R = 0 and R = 0.5); gates_only, ls,
ls_kl, ls_mi and all form the Table 7 ablation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, WEIGHTS, model_title, record_process, results_dir, write_results

from filterscope.methods.decoupling import DecoupleConfig
from filterscope.pipelines.decoupling import DISTILL_PHASES, DecouplingRunOptions, run_decoupling
from filterscope.core.locations import shared_dir
from filterscope.training.train import TrainConfig

RESULTS = results_dir("decoupling")
# The table sets each run beside the dense reference and the static pruning of the same length.
BASELINE_RESULTS, STATIC_PRUNING_RESULTS = results_dir("baselines"), results_dir("static_pruning")

# Settings shared by every variant, chosen from the calibration runs recorded in the results
# (sparsity on evaluation gates, width-independent form, gates learning 10× faster) and from a
# step-0 check of train-mode accuracy on 512 training images: dense 83.0 %, gates with bias 1 and
# noise std 1 (the paper) 39.5 %, bias 2 / noise 1 74.2 %, bias 2 / noise 0.5 83.6 %.
# A calibration run with SemHash's half-soft samples (results/decouple_resnet20_calibration_r05_paper_semhash.md)
# kept evaluation gates 97 % on after 2 epochs while training accuracy fell 28 points: every sample
# now trains with the hard 0/1 gates evaluation uses (semhash_hard_fraction 1), and λs is 4× stronger.
# A second calibration (results/decouple_resnet20_calibration_hard_noise05.md) showed that noise on those
# hard gates still lets training gates close at random while evaluation gates stay on: no noise.
# A third (results/decouple_resnet20_calibration_hard_nonoise.md) closed the gates (2.0×) but diverged
# through KL(z‖y) on hard gates; on digits, the same settings gave top-1 0.387 with KL (response
# detached), 0.919 without it, 0.891 with λk 0.1 and ε 0.01 (dense 0.967), all at 2.2× fewer FLOPs.
COMMON = dict(
    lambda_mi=0.01, lambda_kl=1.0, sparsity_form="mean", sparsity_on="evaluation",
    gate_lr_scale=10.0, gate_bias_init=2.0, gate_noise_std=0.0, semhash_hard_fraction=1.0,
    sparsity_warmup_epochs=1.0,
)
VARIANTS = {
    "r0": dict(config=dict(sparsity_ratio=0.0, lambda_sparsity=4.0), options={}),
    "r05": dict(config=dict(sparsity_ratio=0.5, lambda_sparsity=8.0), options={}),
    # lambda_kl 0 leaves L_kl out (earlier versions said use_kl=False, as the recorded runs' JSON does)
    "gates_only": dict(config=dict(sparsity_ratio=0.5, lambda_sparsity=8.0, lambda_kl=0.0), options=dict(use_mi=False, use_sparsity=False)),
    "ls": dict(config=dict(sparsity_ratio=0.5, lambda_sparsity=8.0, lambda_kl=0.0), options=dict(use_mi=False)),
    "ls_kl": dict(config=dict(sparsity_ratio=0.5, lambda_sparsity=8.0), options=dict(use_mi=False)),
    "ls_mi": dict(config=dict(sparsity_ratio=0.5, lambda_sparsity=8.0, lambda_kl=0.0), options={}),
    "all": dict(config=dict(sparsity_ratio=0.5, lambda_sparsity=8.0), options={}),
}


def run_variant(args) -> None:
    shared = Path(args.shared)
    variant = VARIANTS[args.variant]
    config_values = {**COMMON, **variant["config"]}
    for override in args.set or []:
        key, value = override.split("=", 1)
        config_values[key] = yaml.safe_load(value)  # numbers, strings and lists such as include=[layer*.conv1]
    name = f"{args.model}_{args.name or args.variant}"
    train_config = TrainConfig(
        model=args.model, data=str(shared / "data" / "cifar10-jpeg.zip"), weights=str(shared / "models" / WEIGHTS[args.model]),
        epochs=args.epochs, batch_size=128, lr=0.02, momentum=0.9, weight_decay=5e-4, schedule="cosine", seed=args.seed,
        augment=True, run_dir=str(CHECKPOINTS / f"decouple_{name}"), resume=args.resume,
        max_steps_per_epoch=args.max_steps, threads=args.threads, compile=args.compile,
    )
    decouple_config = DecoupleConfig(**config_values)
    options = DecouplingRunOptions(**variant["options"], recalibrate_bn_images=args.recalibrate_bn_images,
                                   distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
                                   teacher_weights=args.teacher, distill_phase=args.distill_phase, flops_target=args.flops_target)
    processes = record_process(train_config.run_dir, resume=args.resume)
    start = time.time()
    summary = run_decoupling(train_config, decouple_config, options)
    summary["wall_seconds"] = time.time() - start
    summary["wall_seconds_note"] = "this process only (a resumed run's earlier processes are not counted); see training_seconds"
    summary["training_seconds"] = sum(epoch["epoch_seconds"] for epoch in summary["history"])  # over every process
    summary["processes"] = processes
    summary["train_config"] = asdict(train_config)
    summary["variant"] = args.variant
    table = (f"# decouple {name}\n\ntop-1 {summary['accuracy']:.4f}, FLOPs reduction {summary['flops_reduction']:.2f}×, "
             f"energetic {summary['energetic_fraction']:.3f}, silent {summary['silent_fraction']:.3f}, dynamic {summary['dynamic_fraction']:.3f}\n")
    print(write_results(f"decouple_{name}", summary, table))


def draw_tradeoff(model: str, points: list[tuple[str, str, float, float]]) -> Path:
    """Top-1 against FLOPs reduction: (kind, label, FLOPs reduction, top-1) points, one marker per kind."""
    from filterscope.report.figures import plt, save_figure

    figure, axis = plt.subplots(figsize=(6.4, 5.4))
    markers = {"dense": ("k", "s", "dense"), "static": ("tab:blue", "^", "static |γ| pruning"),
               "decoupled": ("tab:red", "o", "decoupled, block-inner gates (main settings)"),
               "decoupled_pf": ("tab:purple", "D", "decoupled, main settings + path fine-tuning"),
               "other": ("0.7", "o", "decoupled, ablations, earlier settings, other variants")}
    floor = 0.80  # the ablation rows far below would squeeze the region where the comparison is
    hidden = [p for p in points if p[3] < floor]
    points = [p for p in points if p[3] >= floor]
    for kind, (color, marker, label) in markers.items():
        chosen = [(reduction, top1, label) for k, label, reduction, top1 in points if k == kind]
        if not chosen:
            continue
        axis.scatter([c[0] for c in chosen], [c[1] for c in chosen], color=color, marker=marker, label=label, zorder=3)
        for reduction, top1, label in chosen if kind != "other" else []:
            axis.annotate(label, (reduction, top1), fontsize=7, xytext=(4, -3), textcoords="offset points")
    best_dense = max((top1 for k, _, _, top1 in points if k == "dense"), default=None)
    if best_dense is not None:
        axis.axhline(best_dense - 0.01, color="k", linestyle=":", linewidth=1, label="1 point below the best dense run")
    axis.set_xlabel("FLOPs reduction (dense / mean FLOPs per image)")
    axis.set_ylabel("test top-1 (CIFAR-10 JPEG)")
    title = f"{model_title(model)} from the shared checkpoint: accuracy against FLOPs"
    if hidden:
        title += f"\n({len(hidden)} runs below top-1 {floor:.2f} not shown; all are in decouple_{model}.md)"
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    return save_figure(figure, RESULTS / f"decouple_{model}_tradeoff.png")


def spearman(runs: list[tuple[str, float, float]]) -> float:
    """Spearman's ρ between the dynamic share and top-1 of (name, dynamic share, top-1) rows."""
    from scipy.stats import spearmanr

    return float(spearmanr([d for _, d, _ in runs], [a for _, _, a in runs]).statistic) if len(runs) > 2 else float("nan")


def draw_dynamic_share(model: str, runs: list[tuple[str, float, float]], static: tuple[float, float] | None) -> Path:
    """Top-1 against the share of dynamic filters for the 10-epoch runs near the 2× point."""
    from filterscope.report.figures import plt, save_figure

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    axis.scatter([100 * d for _, d, _ in runs], [a for _, _, a in runs], color="tab:red", zorder=3)
    for name, dynamic, top1 in runs:
        short = name.replace("ls_mi_", "").replace("ramp_bnbias_", "").replace("_ramp_bnbias", "")
        axis.annotate(short, (100 * dynamic, top1), fontsize=6, xytext=(4, 2), textcoords="offset points")
    if runs:
        axis.set_xlim(right=100 * max(d for _, d, _ in runs) + 20)
    if static is not None:
        axis.axhline(static[1], color="tab:blue", linestyle="--", linewidth=1,
                     label=f"static |γ| pruning at {static[0]:.2f}× (no dynamic filters)")
        axis.legend(fontsize=8, loc="upper right")
    axis.set_xlabel("% dynamic filters (evaluation gates, test split)")
    axis.set_ylabel("test top-1 (CIFAR-10 JPEG)")
    axis.set_title(f"Decoupled {model_title(model)}, 10 epochs, 2.05–2.3× fewer FLOPs: accuracy against input-dependence\n"
                   "(runs of different settings: a correlation across the variants tried, not a controlled sweep)", fontsize=8)
    axis.grid(alpha=0.3)
    return save_figure(figure, RESULTS / f"decouple_{model}_dynamic.png")


def draw_training_curves(model: str, runs: list[tuple[str, list[dict]]], references: dict[int, list[dict]]) -> Path:
    """Test top-1 per epoch of the decoupled runs longer than 10 epochs beside the dense reference of
    the same length, and their share of dynamic filters: where, over training, the gap opens or closes."""
    from matplotlib.ticker import MaxNLocator

    from filterscope.report.figures import plt, save_figure

    figure, (accuracy_axis, dynamic_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])  # more runs than colours: they repeat
    for name, history in runs:
        color = next(colors)
        epochs = [row["epoch"] for row in history]
        accuracy_axis.plot(epochs, [row["test_accuracy"] for row in history], color=color, marker="o", markersize=3,
                           label=f"decoupled {name}")
        dynamic_axis.plot(epochs, [100 * row["gated_dynamic_fraction"] for row in history], color=color, marker="o",
                          markersize=3)
    shades = iter(("k", "0.45", "0.7"))
    for length in sorted({len(history) for _, history in runs} & set(references)):
        dense = references[length]
        accuracy_axis.plot([row["epoch"] for row in dense], [row["test_accuracy"] for row in dense], color=next(shades),
                           linestyle="--", label=f"dense reference, {length} epochs")
    dynamic_axis.axhline(20, color="k", linestyle=":", linewidth=1, label="20 % (the issue's target)")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_ylabel("test top-1 (evaluation gates)")
    dynamic_axis.set_xlabel("epoch")
    dynamic_axis.set_ylabel("% dynamic filters (test split)")
    accuracy_axis.set_title(f"{model_title(model)}: decoupled (solid) and dense (dashed, grey), same schedule", fontsize=9)
    dynamic_axis.set_title("share of gated filters that are dynamic", fontsize=9)
    for axis in (accuracy_axis, dynamic_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    # One legend for both panels, below them: a run has the same colour in each, and legends inside
    # the axes covered the curves once there were more than a few runs.
    handles = accuracy_axis.get_legend_handles_labels()[0] + dynamic_axis.get_legend_handles_labels()[0]
    figure.tight_layout()
    figure.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    return save_figure(figure, RESULTS / f"decouple_{model}_curves.png")


def dynamic_by_stage(per_layer: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """(dynamic filters, gated filters) per stage, the stage being a unit name's first part (``layer3`` of ``layer3.4.conv1``)."""
    stages: dict[str, tuple[int, int]] = {}
    for unit, states in per_layer.items():
        stage = unit.split(".")[0]
        dynamic, filters = stages.get(stage, (0, 0))
        stages[stage] = (dynamic + states["dynamic"], filters + states["filters"])
    return stages


def stage_table(runs: list[tuple[str, int, dict]]) -> str:
    """Markdown table of where the dynamic filters are, per stage, for (name, epochs, per-layer states) rows."""
    stages = sorted({stage for _, _, per_layer in runs for stage in dynamic_by_stage(per_layer)})
    lines = ["| run | " + " | ".join(f"% dynamic in {stage}" for stage in stages) + " | % dynamic overall |",
             "|---|" + "---|" * (len(stages) + 1)]
    for name, epochs, per_layer in runs:
        by_stage = dynamic_by_stage(per_layer)
        cells = [f"{100 * by_stage[s][0] / by_stage[s][1]:.1f} ({by_stage[s][0]}/{by_stage[s][1]})" if s in by_stage else "–"
                 for s in stages]
        total = sum(d for d, _ in by_stage.values()), sum(f for _, f in by_stage.values())
        lines.append(f"| {name} ({epochs} epochs) | " + " | ".join(cells) + f" | {100 * total[0] / total[1]:.1f} |")
    return "\n".join(lines) + "\n"


def write_table(model: str) -> None:
    rows = []
    points = []  # (kind, label, FLOPs reduction, top-1) for the figure
    static_2x = None
    references = {}  # epochs -> per-epoch history of the dense reference, for the curves
    long_runs = []  # (name, history) of the decoupled runs longer than 10 epochs
    long_run_states = []  # (name, epochs, per-layer filter states) of the same runs, for the per-stage table
    for path in sorted(BASELINE_RESULTS.glob(f"baseline_{model}_cifar10jpeg*.json")):  # the 10-epoch reference and longer ones
        baseline = json.loads(path.read_text())
        if "teacher" not in path.stem:
            references[baseline["epochs"]] = baseline["history"]
        kind = "dense reference"
        if "teacher" in path.stem:  # a repeat trained as a distillation teacher; "_rerun": the same command run again
            kind = "dense reference, repeat (distillation teacher)" + (", run again" if "rerun" in path.stem else "")
        rows.append(f"| {kind} ({baseline['epochs']} epochs) | {baseline['test_accuracy']:.4f} | – | – | 1.00× | – | – | – |")
        points.append(("dense", f"{baseline['epochs']} ep", 1.0, baseline["test_accuracy"]))
    for path in sorted(STATIC_PRUNING_RESULTS.glob(f"static_pruned_{model}_*.json")):
        static = json.loads(path.read_text())
        rows.append(f"| static pruning, ranked by BN γ magnitude, `{static['pruned_units']}` keep {static['kept_ratio']:g}{' + distillation' if static.get('teacher') else ''} ({static['epochs']} epochs) | "
                    f"{static['test_accuracy']:.4f} | – | {static['pruned_flops'] / 1e6:.1f} M | {static['flops_reduction']:.2f}× | – | – | – |")
        label = f"{static['epochs']} ep" + (" + distillation" if static.get("teacher") else "")
        points.append(("static", label, static["flops_reduction"], static["test_accuracy"]))
        if static["epochs"] == 10 and 2.05 < static["flops_reduction"] < 2.3 and not static.get("teacher"):
            static_2x = (static["flops_reduction"], static["test_accuracy"])  # the reference line of the second figure
    near_2x = []  # (name, dynamic share, top-1) of the 10-epoch runs near 2×, for the second figure
    dense_flops = None
    for path in sorted(RESULTS.glob(f"decouple_{model}_*.json")):
        result = json.loads(path.read_text())
        if "dense_flops" not in result:  # aborted calibration runs have their own tables
            continue
        name = path.stem.removeprefix(f"decouple_{model}_")
        dense_flops = result["dense_flops"]
        measured = result.get("reevaluated", result)  # re-estimated BatchNorm statistics, where done
        mark = " †" if "reevaluated" in result else ""
        config = result["decouple_config"]
        main_gates = (result.get("variant") in ("ls_mi", "r0") and config.get("include") == ["layer*.conv1"]
                      and config.get("sparsity_form") == COMMON["sparsity_form"])
        distilled = bool(result["options"].get("distill_weight"))
        # L_s + L_mi with gates on the blocks' first convs, per-input budget, no distillation
        main_settings = main_gates and not distilled
        kind = ("decoupled_pf" if config.get("path_finetune_epochs") else "decoupled") if main_settings else "other"
        points.append((kind, f"{result['epochs']} ep", measured["flops_reduction"], measured["accuracy"]))
        # Distillation during path fine-tuning only leaves the gates' training as in the main settings.
        same_gates = main_settings or (main_gates and result["options"].get("distill_phase") == "path_finetune")
        if result["epochs"] > 10 and same_gates:
            long_runs.append((name, result["history"]))
            if "per_layer" in measured:
                long_run_states.append((name, result["epochs"], measured["per_layer"]))
        if result["epochs"] == 10 and 2.05 < measured["flops_reduction"] < 2.3:
            near_2x.append((name, measured["dynamic_fraction"], measured["accuracy"]))
        rows.append(
            f"| {name} ({result['epochs']} epochs) | {measured['accuracy']:.4f}{mark} | "
            f"{result['accuracy']:.4f} | {measured['mean_flops'] / 1e6:.1f} M | {measured['flops_reduction']:.2f}× | "
            f"{100 * measured['energetic_fraction']:.1f} | {100 * measured['silent_fraction']:.1f} | {100 * measured['dynamic_fraction']:.1f} |"
        )
    header = (f"# Decoupled {model_title(model)}, CIFAR-10 JPEG test split (evaluation gates)\n\n"
              f"Dense FLOPs per image: {dense_flops / 1e6 if dense_flops else float('nan'):.1f} M (FlopCounterMode convention, 2 per MAC). "
              "Runs and their settings: `runs.yaml` (one entry per run, `run_list.py NAME` runs it) and each run's JSON. † re-evaluated by "
              "`decouple_reevaluate.py` with BatchNorm statistics re-estimated through the training transform (as runs now do); "
              "the next column is what the run measured itself with statistics from un-augmented images.\n\n"
              "| run | top-1 | top-1 as run measured | mean FLOPs/image | FLOPs reduction | % energetic | % silent | % dynamic |\n"
              "|---|---|---|---|---|---|---|---|\n")
    calibrations = sorted(RESULTS.glob(f"decouple_{model}_calibration_*.md"))
    footer = ("\n\nCalibration runs that were stopped early, with what each showed: "
              + ", ".join(f"`{p.name}`" for p in calibrations) + ".\n") if calibrations else "\n"
    footer += (f"\nTop-1 against FLOPs reduction for every row above: `decouple_{model}_tradeoff.png`"
               + (" (grey: the Table 7 ablation rows, earlier settings and the other variants beyond the paper)"
                  if any(kind == "other" for kind, *_ in points) else "") + ".\n")
    draw_tradeoff(model, points)
    if long_runs:
        draw_training_curves(model, long_runs, references)
        footer += (f"\nTest top-1 and dynamic share per epoch of the runs longer than 10 epochs, beside the dense "
                   f"reference of the same length: `decouple_{model}_curves.png`.\n")
    if long_run_states:
        footer += ("\nWhere the dynamic filters of those runs are, per stage of the network (dynamic / gated filters of the stage, "
                   "test split). In a stage without dynamic filters the gates are fixed (the same filters for every input): "
                   "its share of the FLOPs saving is static pruning learnt by the gates.\n\n" + stage_table(long_run_states))
    if len(near_2x) > 2:  # a correlation needs a few runs
        draw_dynamic_share(model, near_2x, static_2x)
        footer += (f"\nTop-1 against the share of dynamic filters for the 10-epoch runs at 2.05–2.3×: `decouple_{model}_dynamic.png`; "
                   f"Spearman rank correlation over those {len(near_2x)} runs (different settings, not a controlled sweep): "
                   f"{spearman(near_2x):+.2f}.\n")
    (RESULTS / f"decouple_{model}.md").write_text(header + "\n".join(rows) + footer)
    print((RESULTS / f"decouple_{model}.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(WEIGHTS), default="resnet20", help="shared checkpoint to start from")
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--name", help="results name (default: the variant)")
    parser.add_argument("--set", nargs="*", help="override DecoupleConfig fields, e.g. lambda_sparsity=3")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="data order, augmentation and gate noise (the dense reference used 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per epoch (calibration trials)")
    parser.add_argument("--recalibrate-bn-images", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="training steps through torch.compile")
    parser.add_argument("--distill-weight", type=float, default=0.0, help="λd of distillation from the starting network")
    parser.add_argument("--distill-temperature", type=float, default=4.0, help="T of the distillation term")
    parser.add_argument("--teacher", default=None, help="checkpoint to distil from instead of the starting network")
    parser.add_argument("--distill-phase", choices=DISTILL_PHASES, default="all", help="all: distil at every step; path_finetune: only while the gates are frozen")
    parser.add_argument("--flops-target", type=float, default=0.0,
                        help="FLOPs reduction the gate threshold is moved to at the start of path fine-tuning (0: off)")
    parser.add_argument("--shared", default=str(shared_dir()))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        write_table(args.model)
    else:
        run_variant(args)


if __name__ == "__main__":
    main()
