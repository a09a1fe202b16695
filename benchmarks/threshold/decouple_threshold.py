"""One trained decoupled network, many operating points: accuracy against FLOPs as the gate threshold moves.

Loads a finished decoupling run's last checkpoint and, for every threshold τ, opens its gates where
g > τ (`filterscope.shift_gate_threshold`, exactly a shift of the gate biases), re-estimates the
BatchNorm statistics as the run did after each epoch (training transform, the same number of
images and seed), and measures top-1, mean FLOPs per image and filter states on the test split
with evaluation gates. It also chooses, on un-augmented *training* images only, the smallest τ
that keeps a FLOPs-reduction target (`threshold_for_flops`), and reports that τ on the test split.
Nothing is retrained: the gates and weights are those the run learned at τ = 0.

    python benchmarks/threshold/decouple_threshold.py --model resnet56 \
        --run ls_mi_conv1_r045_ramp10_bnbias_detach_pf5_lm003_30ep --target 2.0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, model_title, results_dir, write_results
from torch.utils.data import DataLoader, Subset

from filterscope import shift_gate_threshold
from filterscope import threshold_for_flops
from filterscope.methods.decoupling.paths import collect_paths
from filterscope.data import load_dataset
from filterscope.methods.decoupling import load_decoupled
from filterscope.methods.decoupling.batchnorm import recalibrate_batchnorm
from filterscope.models import model_spec
from filterscope.training.train import TrainConfig, load_data

RESULTS = results_dir("threshold")
DECOUPLING_RESULTS = results_dir("decoupling")  # the trained runs whose threshold moves

DEFAULT_THRESHOLDS = (0.05, 0.02, 0.0, -0.01, -0.02, -0.05, -0.1, -0.2, -0.5, -1.0)
STATE_KEYS = ("accuracy", "mean_flops", "dense_flops", "flops_reduction", "active_fraction",
              "energetic_fraction", "silent_fraction", "dynamic_fraction")


def dense_reference(model: str, epochs: int) -> float | None:
    """Test top-1 of the dense run fine-tuned with the same schedule, when it was recorded."""
    name = f"baseline_{model}_cifar10jpeg" + (f"_{epochs}ep" if epochs != 10 else "") + ".json"
    path = results_dir("baselines") / name
    return json.loads(path.read_text())["test_accuracy"] if path.exists() else None


def draw(model: str, run: str, rows: list[dict], chosen: dict, dense: float | None, target: float):
    from filterscope.report.figures import plt, save_figure

    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    ordered = sorted(rows, key=lambda r: r["flops_reduction"])
    axis.plot([r["flops_reduction"] for r in ordered], [r["accuracy"] for r in ordered], "o-", color="tab:red",
              label="decoupled, gates open where g > τ")
    for row in rows:
        axis.annotate(f"τ={row['threshold']:g}", (row["flops_reduction"], row["accuracy"]), fontsize=7,
                      xytext=(4, -9), textcoords="offset points")
    axis.scatter([chosen["flops_reduction"]], [chosen["accuracy"]], marker="*", s=160, color="tab:purple", zorder=4,
                 label=f"τ chosen on training images for ≥ {target:g}× (τ={chosen['threshold']:.3f})")
    if dense is not None:
        axis.axhline(dense, color="k", linestyle="--", linewidth=1, label=f"dense, same schedule ({dense:.4f})")
        axis.axhline(dense - 0.01, color="k", linestyle=":", linewidth=1, label="1 point below dense")
    axis.axvline(target, color="0.5", linestyle=":", linewidth=1)
    axis.set_xlabel("FLOPs reduction (dense / mean FLOPs per image)")
    axis.set_ylabel("test top-1 (CIFAR-10 JPEG, evaluation gates)")
    axis.set_title(f"{model_title(model)} {run}\none trained network, gate threshold τ moved after training", fontsize=8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    return save_figure(figure, RESULTS / f"decouple_threshold_{model}_{run}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--run", required=True, help="run name: decoupling/results/decouple_<model>_<run>.json")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    parser.add_argument("--target", type=float, default=2.0, help="FLOPs reduction the chosen τ must keep")
    parser.add_argument("--search-images", type=int, default=5000, help="un-augmented training images τ is chosen on")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.time()
    run_result = json.loads((DECOUPLING_RESULTS / f"decouple_{args.model}_{args.run}.json").read_text())
    train_config = TrainConfig(**run_result["train_config"])
    options = run_result["options"]
    spec = model_spec(args.model)
    train_set, test_set = load_data(train_config, spec.mean, spec.std, spec.input_shape, None)
    trained = load_decoupled(CHECKPOINTS / f"decouple_{args.model}_{args.run}" / "checkpoints" / "last.pt")
    bn_seed = train_config.seed + train_config.epochs

    plain_train = load_dataset(train_config.data, "train", mean=spec.mean, std=spec.std, augment=False)
    chosen_indices = torch.randperm(len(plain_train), generator=torch.Generator().manual_seed(0))[: args.search_images]
    search_loader = DataLoader(Subset(plain_train, chosen_indices.tolist()), batch_size=256)
    chosen_threshold, search_reduction = threshold_for_flops(trained, search_loader, args.target, low=-0.5, high=0.5, steps=10)

    test_loader = DataLoader(test_set, batch_size=256)
    rows = []
    for threshold in [*args.thresholds, chosen_threshold]:
        shifted = shift_gate_threshold(trained, threshold)
        recalibrate_batchnorm(shifted, train_set, options["recalibrate_bn_images"], seed=bn_seed)
        summary = collect_paths(shifted, test_loader, progress=False, keep_paths=False).summary()
        rows.append({"threshold": threshold, **{key: summary[key] for key in STATE_KEYS}})
        print(json.dumps(rows[-1]), flush=True)
    chosen = rows.pop()
    chosen["search_flops_reduction"] = search_reduction
    dense = dense_reference(args.model, train_config.epochs)
    figure = draw(args.model, args.run, rows, chosen, dense, args.target)

    def line(row: dict, label: str) -> str:
        delta = f"{100 * (row['accuracy'] - dense):+.2f}" if dense is not None else "–"
        return (f"| {label} | {row['accuracy']:.4f} | {delta} | {row['mean_flops'] / 1e6:.1f} M | {row['flops_reduction']:.2f}× | "
                f"{100 * row['active_fraction']:.1f} | {100 * row['energetic_fraction']:.1f} / {100 * row['silent_fraction']:.1f} / "
                f"{100 * row['dynamic_fraction']:.1f} |")

    table = (f"# Gate threshold after training: {model_title(args.model)} `{args.run}`\n\n"
             f"The run's own result (τ = 0, as trained): top-1 {run_result['accuracy']:.4f} at "
             f"{run_result['flops_reduction']:.2f}×. Each row opens the gates where g > τ and re-estimates the "
             f"BatchNorm statistics ({options['recalibrate_bn_images']} augmented training images, seed {bn_seed}); "
             f"nothing is retrained. Dense reference, same {train_config.epochs}-epoch schedule: "
             f"{'–' if dense is None else f'{dense:.4f}'}. Figure: `{figure.name}`.\n\n"
             "| τ | top-1 | Δ vs dense (points) | mean FLOPs/image | FLOPs reduction | % gates open | % energetic / silent / dynamic |\n"
             "|---|---|---|---|---|---|---|\n"
             + "\n".join(line(row, f"{row['threshold']:g}") for row in rows) + "\n"
             + line(chosen, f"**{chosen['threshold']:.4f}** (chosen on {args.search_images} training images for "
                            f"≥ {args.target:g}×: {search_reduction:.2f}× there)") + "\n")
    results = {"model": args.model, "run": args.run, "run_accuracy": run_result["accuracy"],
               "run_flops_reduction": run_result["flops_reduction"], "dense_accuracy": dense, "target": args.target,
               "search_images": args.search_images, "batchnorm_images": options["recalibrate_bn_images"],
               "batchnorm_seed": bn_seed, "rows": rows, "chosen": chosen, "wall_seconds": time.time() - started,
               "threads": args.threads}
    print(write_results(f"decouple_threshold_{args.model}_{args.run}", results, table, directory=RESULTS))


if __name__ == "__main__":
    main()
