"""What the calculation paths of the shipped decoupled ResNet-20 say (issue 37, items 1-2; Li et al., Sec. 4.2).

On a seeded sample of the CIFAR-10 JPEG test split (2,000 images by default):

1. the path embedding (``filterscope embed``): t-SNE of the binary paths, k-NN accuracy of the class from
   held-out paths, silhouettes, mutual information per gated layer, beside the dense baselines on the same
   units — the decoupled checkpoint's own weights without gates, and, in a second pass, the shared
   pretrained ResNet-20 that decoupling started from;
2. the Hopkins decision tree (``filterscope tree``) at the default threshold, with the layer where each class
   first parts;
3. why the default threshold: H of the real gate vectors against the same vectors with each filter's column
   shuffled across inputs (structure gone, on-rates kept), per layer and per group size, and the number of
   splits each threshold gives for both.

    python benchmarks/path_interpretation/path_interpretation.py            # about 5 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, WEIGHTS, results_dir, write_results

from filterscope.analyses.hopkins import hopkins_statistic
from filterscope.analyses.hopkins_tree import HopkinsTreeConfig, build_hopkins_tree
from filterscope.analyses.path_embedding import PathEmbeddingConfig
from filterscope.core.locations import shared_dir
from filterscope.methods.decoupling.paths import collect_paths
from filterscope.pipelines.path_interpretation import (PathAnalysisSettings, load_gated_model, run_path_embedding,
                                                       run_path_tree, sampled_inputs)

RESULTS = results_dir("path_interpretation")
REPOSITORY = Path(__file__).resolve().parents[2]
THRESHOLDS = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
GROUP_SIZES = (50, 100, 200, 500, 1000, 2000)
NULL_SEEDS = (0, 1, 2)


def shuffled_columns(gates: np.ndarray, seed: int) -> np.ndarray:
    """Each filter's column permuted across the inputs on its own: the on-rates stay, any joint structure goes."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(column) for column in gates.T], axis=1) if gates.shape[1] else gates


def recorded_gates(settings: PathAnalysisSettings):
    """The gate vectors per layer, labels and layer names of the same sample the verbs analyse."""
    from torch.utils.data import DataLoader

    model = load_gated_model(settings.weights)
    dataset, _, classes = sampled_inputs(model, settings)
    record = collect_paths(model, DataLoader(dataset, batch_size=settings.batch_size), progress=False)
    paths, bounds = record.paths(), np.cumsum([0, *record.layer_widths])
    gates = [paths[:, bounds[k]:bounds[k + 1]] for k in range(len(record.layer_widths))]
    return gates, record.labels, record.layer_names, classes


def threshold_study(gates, labels, layer_names, min_size: int, seed: int) -> dict:
    """H per layer (whole sample) and per group size (last layer), real against shuffled; splits per threshold."""
    per_layer = []
    for name, layer_gates in zip(layer_names, gates):
        dynamic = int((layer_gates.min(0) != layer_gates.max(0)).sum())
        null = [hopkins_statistic(shuffled_columns(layer_gates, s), seed=seed, binary=True) for s in NULL_SEEDS]
        per_layer.append({"layer": name, "filters": int(layer_gates.shape[1]), "dynamic_filters": dynamic,
                          "distinct_vectors": int(len(np.unique(layer_gates, axis=0))),
                          "hopkins": _finite(hopkins_statistic(layer_gates, seed=seed, binary=True)),
                          "hopkins_shuffled": [_finite(v) for v in null]})
    last = gates[-1]
    per_size = []
    for size in GROUP_SIZES:
        if size > len(last):
            continue
        real, null = [], []
        for s in NULL_SEEDS:
            chosen = np.random.default_rng(100 + s).choice(len(last), size, replace=False)
            real.append(hopkins_statistic(last[chosen], seed=s, binary=True))
            null.append(hopkins_statistic(shuffled_columns(last[chosen], s), seed=s, binary=True))
        per_size.append({"group_size": size, "hopkins": [_finite(v) for v in real],
                         "hopkins_shuffled": [_finite(v) for v in null]})
    sweep = []
    for threshold in THRESHOLDS:
        config = HopkinsTreeConfig(threshold=threshold, min_size=min_size, seed=seed)
        real = build_hopkins_tree(gates, labels, layer_names, config).summary()
        null = [build_hopkins_tree([shuffled_columns(g, s) for g in gates], labels, layer_names, config).summary()
                for s in NULL_SEEDS]
        sweep.append({"threshold": threshold, "splits": real["splits"], "splits_per_layer": real["splits_per_layer"],
                      "shuffled_splits": [n["splits"] for n in null],
                      "shuffled_splits_per_layer": [n["splits_per_layer"] for n in null]})
    return {"last_layer": layer_names[-1], "per_layer": per_layer, "per_group_size": per_size, "sweep": sweep}


def split_nodes(node: dict):
    """The nodes of a saved tree that split."""
    if node["children"]:
        yield node
    for child in node["children"]:
        yield from split_nodes(child)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def embedding_rows(name: str, summary: dict) -> list[str]:
    rows = []
    for representation, scores in summary["representations"].items():
        adjusted = [layer["mi_adjusted"] for layer in scores["mutual_information"].values()]
        silhouettes = [("-" if scores[k] is None else f"{scores[k]:.3f}") for k in ("silhouette_embedding", "silhouette_pca")]
        rows.append(f"| {name} | {representation} | {scores['dims']} | {scores['distinct_inputs']} | "
                    f"{scores['knn_accuracy']:.3f} | {silhouettes[0]} | {silhouettes[1]} | {np.mean(adjusted):.3f} |")
    return rows


def table(results: dict) -> str:
    lines = ["# Path interpretation, ResNet-20 (shipped decoupled checkpoint, seed 1)", "",
             f"{results['samples']} CIFAR-10 JPEG test images (seeded sample); k-NN k = {results['knn_neighbours']}, "
             f"chance {results['embedding']['knn_chance']:.3f}.", "",
             "| dense baseline from | representation | dims | distinct inputs | k-NN acc. | silhouette 2-D | silhouette PCA "
             "| mean adjusted MI per layer |", "|---|---|---|---|---|---|---|---|"]
    lines += embedding_rows("decoupled weights, gates removed", results["embedding"])
    lines += embedding_rows("pretrained ResNet-20", results["embedding_pretrained_dense"])[1:]
    tree = results["tree"]
    lines += ["", f"Tree (threshold {tree['config']['threshold']}, min size {tree['config']['min_size']}): "
              f"{tree['splits']} splits, {tree['leaves']} leaves.", "", "| class | first parts at | from |", "|---|---|---|"]
    lines += [f"| {name} | {row['first_parts_at']} | {', '.join(row['parts_from'])} |" for name, row in tree["class_parting"].items()]
    lines += ["", "| layer | dynamic filters | distinct vectors | H | H shuffled (3 seeds) |", "|---|---|---|---|---|"]
    for row in results["threshold_study"]["per_layer"]:
        shuffled = ", ".join("-" if v is None else f"{v:.3f}" for v in row["hopkins_shuffled"])
        h = "-" if row["hopkins"] is None else f"{row['hopkins']:.3f}"
        lines.append(f"| {row['layer']} | {row['dynamic_filters']} | {row['distinct_vectors']} | {h} | {shuffled} |")
    lines += ["", f"| group size ({results['threshold_study']['last_layer']}) | H (3 samples) | H shuffled |", "|---|---|---|"]
    for row in results["threshold_study"]["per_group_size"]:
        lines.append(f"| {row['group_size']} | {', '.join(f'{v:.3f}' for v in row['hopkins'])} | "
                     f"{', '.join(f'{v:.3f}' for v in row['hopkins_shuffled'])} |")
    lines += ["", "H at the default tree's splits: " + ", ".join(f"{v:.3f}" for v in results["threshold_study"]["split_hopkins"]),
              "", "| threshold | splits | splits, shuffled gates (3 seeds) |", "|---|---|---|"]
    lines += [f"| {row['threshold']} | {row['splits']} | {', '.join(map(str, row['shuffled_splits']))} |"
              for row in results["threshold_study"]["sweep"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=str(REPOSITORY / "checkpoints" / "resnet20-cifar10-2x-seed1.pt"))
    parser.add_argument("--data", default=str(shared_dir() / "data" / "cifar10-jpeg.zip"))
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # scikit-learn's OpenMP (t-SNE, k-means) and BLAS
    run_dir = CHECKPOINTS / "path_interpretation_resnet20"
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = PathAnalysisSettings(weights=args.weights, data=args.data, split="test", samples=args.samples,
                                    seed=args.seed, run_dir=str(run_dir / "own_weights"), progress=False)
    seconds = {}
    start = time.perf_counter()
    embedding = run_path_embedding(settings, PathEmbeddingConfig(seed=args.seed))
    seconds["embedding"] = time.perf_counter() - start
    pretrained = replace(settings, dense_weights=str(shared_dir() / "models" / WEIGHTS["resnet20"]),
                         run_dir=str(run_dir / "pretrained_dense"))
    embedding_pretrained = run_path_embedding(pretrained, PathEmbeddingConfig(seed=args.seed))
    embedding_pretrained["dense_source"] = f"../shared/models/{WEIGHTS['resnet20']} (the pretrained network decoupling started from)"
    start = time.perf_counter()
    tree = run_path_tree(settings, HopkinsTreeConfig(min_size=args.min_size, seed=args.seed))
    seconds["tree"] = time.perf_counter() - start
    gates, labels, layer_names, _ = recorded_gates(settings)
    study = threshold_study(gates, labels, layer_names, args.min_size, args.seed)
    study["split_hopkins"] = sorted(node["hopkins"] for node in split_nodes(json.loads(
        (run_dir / "own_weights" / "arrays" / "path_tree.json").read_text())["tree"]))
    figures = run_dir / "own_weights" / "figures"
    _copy(figures / "path_embedding.png", RESULTS / "path_embedding_resnet20.png")
    _copy(run_dir / "pretrained_dense" / "figures" / "path_embedding.png", RESULTS / "path_embedding_resnet20_pretrained_dense.png")
    _copy(figures / "path_tree.png", RESULTS / "path_tree_resnet20.png")
    _copy(figures / "class_parting.png", RESULTS / "class_parting_resnet20.png")
    _copy(run_dir / "own_weights" / "arrays" / "path_tree.json", RESULTS / "trees" / "path_tree_resnet20.json")
    results = {"model": "resnet20", "weights": Path(args.weights).name, "samples": args.samples, "seed": args.seed,
               "knn_neighbours": embedding["knn_neighbours"], "seconds": seconds, "embedding": embedding,
               "embedding_pretrained_dense": embedding_pretrained, "tree": tree, "threshold_study": study}
    target = write_results("path_interpretation_resnet20", results, table(results), directory=RESULTS)
    print(table(results))
    print(f"written: {target}")


if __name__ == "__main__":
    main()
