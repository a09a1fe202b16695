"""The demo's analysis steps, each the same pipeline a verb runs, with sample sizes fit for a demo.

:data:`STEPS` is the single ordered list of them; each step takes the :class:`~.demo.DemoState`, writes
into its run directory and returns a one-line result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..training.train import TrainConfig, train
from .demo_state import DIGITS, DemoOptions, DemoState, is_decoupled

__all__ = ["STEPS", "DemoSizes", "sizes_for"]

K_GRID = (1, 2, 3, 5, 8, 13, 21, 32)  # k1 × k2 of the influence step's r_A grid (at most the 32 features of digits_cnn)
VAL_FRACTION = 0.05  # share of a large training split held out to evaluate the per-class steps on (2,500 CIFAR-10 images)


@dataclass(frozen=True)
class DemoSizes:
    """Sample sizes of the slow steps (None: the whole split)."""

    path_samples: int | None
    occlusion_images: int
    dissection_images: int | None
    adversarial_pool: int
    adversarial_test: int
    adversarial_runs: int
    adversarial_n: tuple[int, ...]
    cdrp_steps: int
    semantic_ratios: tuple[float, ...]
    semantic_modes: tuple[str, ...]
    eval_split: str  # split the per-class analyses are evaluated on ("val": a held-out share of the training split)
    bench_inputs: int
    bench_repeats: int
    bench_calibration: int
    bench_eval_images: int | None  # test images the bench's accuracy and mean FLOPs come from (None: all)


def sizes_for(data: str, quick: bool) -> DemoSizes:
    """The digits (359 test images) run whole; other data sets are sampled, less with ``quick``."""
    if data == DIGITS:
        return DemoSizes(None, 100, None, 10, 20, 2, (1, 5), 30, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6), ("nwp", "lwp"),
                         "test", 50, 10, 500, None)
    if quick:
        return DemoSizes(300, 30, 100, 5, 10, 1, (1, 5), 10, (0.05, 0.1), ("nwp",), "val", 30, 5, 500, 1000)
    return DemoSizes(1000, 100, 300, 10, 20, 2, (1, 5, 10), 30, (0.05, 0.1, 0.2, 0.3), ("nwp",), "val", 100, 10, 2000, 2000)


def train_step(state: DemoState) -> str:
    """Train the dense network (digits: 30 epochs of the small CNN), or take the given checkpoint."""
    options = state.options
    if options.weights is not None:
        if is_decoupled(options.weights):
            state.decoupled_weights = options.weights
            state.dense_weights = str(save_base_network(options.weights, state.run.path / "dense.pt"))
            return f"skipped: {options.weights} is decoupled; its network without gates is {state.dense_weights}"
        state.dense_weights = options.weights
        return f"skipped: starting from {options.weights}"
    config = TrainConfig(
        model=options.model, data=options.data, epochs=options.epochs, batch_size=64 if options.data == DIGITS else 128,
        lr=0.05 if options.data == DIGITS else 0.1, weight_decay=5e-4, schedule="cosine", seed=options.seed,
        run_dir=str(state.run.path), progress=options.progress, threads=_threads(options),
        max_steps_per_epoch=20 if options.quick and options.data != DIGITS else None,
    )
    result = train(config)
    state.dense_weights = str(result.run_dir / "checkpoints" / "last.pt")
    return f"top-1 {result.final['accuracy']:.4f} after {options.epochs} epochs"


def _threads(options: DemoOptions) -> int | None:
    """One thread on the 8×8 digits (more only add synchronisation), the caller's choice otherwise."""
    return options.threads if options.threads is not None else (1 if options.data == DIGITS else None)


def save_base_network(decoupled: str, target: Path) -> Path:
    """The decoupled checkpoint's network without its gates, as a plain checkpoint (for the per-class steps)."""
    from ..methods.decoupling import load_decoupled
    from ..methods.decoupling.unwrap import base_network
    from ..models.checkpoint import save_atomically

    model = load_decoupled(decoupled)
    return save_atomically({"state_dict": base_network(model).state_dict(), "model_name": model.model_name}, target)


def decouple_step(state: DemoState) -> str:
    """Decouple the dense network (digits: the demo's settings; any other model: the bundled 'default')."""
    from ..methods.decoupling import DecoupleConfig
    from .decoupling import DecouplingRunOptions, run_decoupling
    from .recipes import load_recipe

    options = state.options
    if state.decoupled_weights is not None:
        return "skipped: the given checkpoint is decoupled"
    if options.decouple_epochs == 0:
        return "skipped: --decouple-epochs 0"
    run_dir = str(state.run.path / "decoupled")
    if options.data == DIGITS and options.model == "digits_cnn":
        train_config = TrainConfig(
            model=options.model, data=options.data, weights=state.dense_weights, epochs=options.decouple_epochs,
            batch_size=64, lr=0.02, schedule="cosine", seed=options.seed, run_dir=run_dir, progress=options.progress,
            threads=_threads(options))
        decouple_config = DecoupleConfig(lambda_mi=0.01, lambda_kl=1.0, lambda_sparsity=5.0, sparsity_ratio=0.5,
                                         sparsity_form="mean", sparsity_on="evaluation", gate_lr_scale=10.0)
        run_options = DecouplingRunOptions(recalibrate_bn_images=2000)
    else:
        train_config, decouple_config, run_options = load_recipe(
            "default", model=options.model, data=options.data, weights=state.dense_weights, epochs=options.decouple_epochs,
            run_dir=run_dir, seed=options.seed, progress=options.progress, threads=_threads(options),
            max_steps_per_epoch=20 if options.quick else None, path_finetune_epochs=0)
    result = run_decoupling(train_config, decouple_config, run_options)
    state.decoupled_weights = str(Path(run_dir) / "checkpoints" / "last.pt")
    return (f"top-1 {result['accuracy']:.4f} at {result['flops_reduction']:.2f}x fewer FLOPs; filters "
            f"{result['energetic_fraction']:.0%} energetic / {result['dynamic_fraction']:.0%} dynamic / "
            f"{result['silent_fraction']:.0%} silent")


def _sizes(state: DemoState) -> DemoSizes:
    return sizes_for(state.options.data, state.options.quick)


def _run_dir(state: DemoState) -> str:
    return str(state.run.path)


def paths_step(state: DemoState) -> str:
    """Filter states and paths on the test split (written by decoupling already when it ran here)."""
    from .paths import record_checkpoint_paths

    decoupled = state.run.path / "decoupled" / "checkpoints" / "last.pt"
    if state.decoupled_weights == str(decoupled):
        summary = state.run.peek_metrics(state.run.path / "decoupled").get("paths_test", {})
    else:
        summary = record_checkpoint_paths(state.decoupled_weights, state.options.data, run_dir=_run_dir(state),
                                          progress=state.options.progress)
    return (f"{summary.get('flops_reduction', float('nan')):.2f}x fewer FLOPs per test image on average; "
            f"{summary.get('dynamic_fraction', float('nan')):.0%} of the gated filters dynamic")


def _path_settings(state: DemoState):
    from .path_interpretation import PathAnalysisSettings

    return PathAnalysisSettings(weights=state.decoupled_weights, data=state.options.data, samples=_sizes(state).path_samples,
                                seed=state.options.seed, run_dir=_run_dir(state), progress=state.options.progress)


def embed_step(state: DemoState) -> str:
    from ..analyses.path_embedding import PathEmbeddingConfig
    from .path_interpretation import run_path_embedding

    summary = run_path_embedding(_path_settings(state), PathEmbeddingConfig(seed=state.options.seed))
    scores = summary["representations"]
    return ", ".join(f"{name} {row['knn_accuracy']:.3f}" for name, row in scores.items()) + \
        f" 5-NN accuracy (chance {summary['knn_chance']:.3f})"


def tree_step(state: DemoState) -> str:
    from ..analyses.hopkins_tree import HopkinsTreeConfig
    from .path_interpretation import run_path_tree

    summary = run_path_tree(_path_settings(state), HopkinsTreeConfig(seed=state.options.seed))
    return f"{summary['splits']} splits, {summary['leaves']} leaves over {summary['num_inputs']} images"


def occlusion_step(state: DemoState) -> str:
    from ..models import model_spec
    from .occlusion import OcclusionSettings, run_occlusion

    height, width = model_spec(state.options.model).input_shape[1:]
    box = (0, 0, max(1, width // 2), max(1, height // 2))  # the top-left quarter of every image
    summary = run_occlusion(OcclusionSettings(weights=state.decoupled_weights, data=state.options.data,
                                              images=_sizes(state).occlusion_images, box=box, run_dir=_run_dir(state),
                                              progress=state.options.progress))
    ratios = [row["union_over_single"] for row in summary["per_layer"].values() if math.isfinite(row["union_over_single"])]
    ratio = sum(ratios) / len(ratios) if ratios else float("nan")  # a layer where nothing switched off has no ratio
    return (f"top-left quarter occluded: prediction changed for {summary['prediction_changed']:.0%}; union of the "
            f"switched-off filters' fields covers it {ratio:.2f}x better than one filter (mean over the {len(ratios)} layers where filters switched off)")


def dissection_step(state: DemoState) -> str:
    from .dissection import DissectionSettings, run_dissection

    summary = run_dissection(DissectionSettings(weights=state.decoupled_weights, data=state.options.data,
                                                images=_sizes(state).dissection_images, run_dir=_run_dir(state),
                                                progress=state.options.progress))
    rows = summary["per_layer"]
    variants = list(summary["variants"])
    means = {v: sum(r[f"{v}_score"] for r in rows) / max(1, len(rows)) for v in variants}
    return "mean colour dissection score " + ", ".join(f"{v} {score:.3f}" for v, score in means.items())


def adversarial_step(state: DemoState) -> str:
    from ..analyses.adversarial import AdversarialConfig
    from ..analyses.detection import DetectionConfig
    from ..analyses.routing_paths import CriticalPathConfig
    from .adversarial import DEFAULT_PAIR, AdversarialOptions, check_sizes, run_adversarial

    sizes = _sizes(state)
    digits = state.options.data == DIGITS
    config = AdversarialConfig(
        eps=0.1 if digits else 8 / 255,  # 8×8 digits of 17 grey levels: 8/255 fools too few of them
        detection=DetectionConfig(n_per_class=sizes.adversarial_n, runs=sizes.adversarial_runs, seed=state.options.seed),
        critical=CriticalPathConfig(steps=sizes.cdrp_steps)).validate()
    options = AdversarialOptions(checkpoint=state.decoupled_weights, data=state.options.data, config=config,
                                 pool_per_class=sizes.adversarial_pool, test_per_class=sizes.adversarial_test,
                                 pair=("3", "8") if digits else DEFAULT_PAIR, run_dir=_run_dir(state),
                                 progress=state.options.progress)
    check_sizes(options)
    summary = run_adversarial(options)
    best = max(summary["table"], key=lambda row: (row["feature"] == "path", row["train_attack"] == row["test_attack"],
                                                   row["classifier"] == "random_forest", row["n"], row["auc_mean"]))
    return (f"path features, {best['classifier']}, n={best['n']}, {best['train_attack']} → {best['test_attack']}: "
            f"AUC {best['auc_mean']:.3f} ± {best['auc_std']:.3f}")


def _per_class_settings(state: DemoState):
    from .per_class import PerClassSettings

    sizes = _sizes(state)
    held_out = sizes.eval_split == "val"  # every pruned network is evaluated: on 5 % of the training split, not all test images
    return PerClassSettings(model=state.options.model, weights=state.dense_weights, data=state.options.data,
                            statistics_split="train", eval_split=sizes.eval_split, val_fraction=VAL_FRACTION if held_out else 0.0,
                            batch_size=256, run_dir=_run_dir(state), progress=state.options.progress)


def semantic_step(state: DemoState) -> str:
    from ..methods.semantic_pruning import SemanticPruningConfig
    from .semantic_pruning import run_semantic_pruning

    sizes = _sizes(state)
    summary = run_semantic_pruning(_per_class_settings(state), SemanticPruningConfig(
        modes=sizes.semantic_modes, settings=sizes.semantic_ratios))
    theta = sizes.semantic_ratios[len(sizes.semantic_ratios) // 2]  # a middle ratio: the largest ones collapse small networks
    rows = [r for r in summary["results"] if r["mode"] == sizes.semantic_modes[0] and r["setting"] == theta]
    means = {key: sum(r[key] for r in rows) / max(1, len(rows)) for key in ("recall", "auc", "accuracy")}
    return (f"θ {theta} ({sizes.semantic_modes[0]}, responses at {summary['where']}): the pruned-for class keeps recall "
            f"{means['recall']:.3f}, AUC {means['auc']:.3f}; overall accuracy {means['accuracy']:.3f} (means over {len(rows)} classes)")


def influence_step(state: DemoState) -> str:
    from .influence import run_influence

    from ..methods.influence.final_layer import find_final_linear
    from ..models import create_model, model_spec

    features = find_final_linear(create_model(state.options.model), model_spec(state.options.model).input_shape).in_features
    summary = run_influence(_per_class_settings(state), k_grid=tuple(k for k in K_GRID if k <= features))
    return (f"5 features per class: decomposed final layer r_A {summary['relative_accuracy']:.3f} at "
            f"{summary['flops_final_full'] / max(1, summary['flops_final_decomposed']):.1f}x fewer final-layer FLOPs"
            + (f"; r_A grid over k = {', '.join(map(str, summary['r_a_grid']['ks']))}" if "r_a_grid" in summary else ""))


def engine_step(state: DemoState) -> str:
    from .bench import BenchOptions, run_bench

    sizes = _sizes(state)
    derived = state.dense_weights == str(state.run.path / "dense.pt")  # the decoupled weights without gates: no dense model
    result = run_bench(BenchOptions(weights=state.decoupled_weights, data=state.options.data,
                                    dense_weights=None if derived else state.dense_weights, inputs=sizes.bench_inputs,
                                    repeats=sizes.bench_repeats, calibration=sizes.bench_calibration,
                                    eval_images=sizes.bench_eval_images, throughput_batches=2, throughput_repeats=3,
                                    routes=(), progress=state.options.progress))
    state.run.update_metrics("bench", result)
    rows = {row["name"]: row for row in result["rows"]}
    executor = rows["executor"]
    return (f"executor {executor['latency_us']['median']:.0f} µs per image, {executor['speedup']:.2f}x the faster dense "
            f"form, at {executor['flops_reduction']:.2f}x fewer FLOPs")


#: The demo's steps, in order: (name, step).
STEPS: tuple[tuple[str, Callable[[DemoState], Any]], ...] = (
    ("train", train_step), ("decouple", decouple_step), ("paths", paths_step), ("path embedding", embed_step),
    ("path tree", tree_step), ("occlusion", occlusion_step), ("dissection", dissection_step),
    ("adversarial detection", adversarial_step), ("semantic pruning", semantic_step), ("influence", influence_step),
    ("engine", engine_step),
)
