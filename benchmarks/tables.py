"""Rebuild every study's runs.csv from its per-run results JSON.

    python benchmarks/tables.py            # all studies
    python benchmarks/tables.py decoupling # one

Each study folder (benchmarks/<study>/) gets one table of all its runs, one row per run (or per measured
setting, where one JSON holds several), with the fixed columns listed in COLUMNS below; the last column
names the JSON the row comes from. Numbers are copied, not recomputed: the JSON stays the record.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

COLUMNS = {
    "decoupling": ("run", "model", "epochs", "status", "top1", "flops_reduction", "dynamic_fraction", "active_fraction",
                   "energetic_fraction", "silent_fraction", "variant", "sparsity_ratio", "sparsity_form", "lambda_mi",
                   "ramp_epochs", "path_finetune_epochs", "distill_weight", "distill_phase", "flops_target", "seed",
                   "last_epoch", "last_epoch_top1", "last_epoch_flops_reduction", "reevaluated_top1", "json"),
    "baselines": ("run", "model", "epochs", "top1", "top1_before", "test_loss", "seed", "json"),
    "static_pruning": ("run", "model", "epochs", "kept_ratio", "pruned_units", "top1", "flops_reduction",
                       "distill_weight", "seed", "json"),
    "threshold": ("run", "model", "decoupled_run", "threshold", "chosen", "top1", "flops_reduction", "dynamic_fraction",
                  "active_fraction", "json"),
    "path_class_information": ("run", "model", "decoupled_run", "lambda_mi", "network_top1", "flops_reduction",
                               "dynamic_filters_train", "filters", "path_classifier_top1", "agreement_with_network",
                               "chance", "json"),
    "influence": ("run", "model", "measure", "criterion", "k1", "k2", "top1_before", "top1", "top1_dense",
                  "relative_accuracy", "seconds_ratio", "json"),
    "semantic_pruning": ("run", "model", "class", "mode", "theta", "recall", "precision", "auc", "accuracy",
                         "predicted_share", "fraction_direct", "fraction_residual", "dead", "json"),
    "engine": ("run", "model", "measure", "setting", "top1", "flops_reduction", "median", "p10", "p90", "unit",
               "speedup_vs_faster_dense", "json"),
    "overhead": ("run", "model", "setting", "batch_size", "threads", "repeats", "step_seconds_median", "ratio",
                 "ratio_to", "json"),
    "path_interpretation": ("run", "model", "measure", "setting", "dense_source", "samples", "knn_k", "knn_accuracy",
                            "silhouette_2d", "silhouette_pca", "mean_mi_adjusted", "distinct_inputs", "threshold",
                            "splits", "shuffled_splits", "json"),
    "concepts": ("run", "model", "analysis", "setting", "stage", "images", "switched_off_per_image", "single_iou",
                 "best_single_iou", "union_iou", "union_over_single", "stayed_on_iou", "score", "filters_with_field",
                 "filters", "control_score", "detectors", "json"),
    "adversarial": ("run", "model", "train_attack", "test_attack", "eps", "classifier", "n", "feature", "auc_mean",
                    "auc_std", "runs", "test_per_class", "test_success_rate", "json"),
    "bn_free_vgg": ("run", "model", "network", "epochs", "top1", "flops_reduction", "energetic", "silent", "dynamic",
                    "json"),
}


def ratios_text(value) -> str | float | None:
    """A per-layer ratio list as its runs of equal values, e.g. 0.25/0.5/0.75 for three stages of three."""
    if not isinstance(value, list):
        return value
    runs = [v for i, v in enumerate(value) if i == 0 or v != value[i - 1]]
    return "/".join(f"{v:g}" for v in runs)


def decoupling_rows(path: Path, result: dict) -> list[dict]:
    config, options = result.get("decouple_config") or {}, result.get("options") or {}
    if "decouple" in config:  # a stopped run, recorded by record_stopped_run.py from its decouple.yaml
        config, options = config["decouple"], config.get("options", {})
    train = result.get("train_config", {})
    model = result.get("model") or path.stem.split("_")[1]
    if "accuracy" in result:
        status = "finished"
    elif "stopped_after_epochs" in result:
        status = f"stopped after epoch {result['stopped_after_epochs']}"
    else:
        status = result.get("status", "")
    histories = {"": result.get("history") or []}
    if isinstance(result.get("runs"), dict):  # aborted calibrations holding several runs
        histories = {f"/{key}": run.get("history") or [] for key, run in result["runs"].items()}
    rows = []
    for suffix, history in histories.items():
        last = history[-1] if history else {}
        rows.append({
            "run": path.stem + suffix, "model": model, "epochs": result.get("epochs", train.get("epochs")),
            "status": status, "top1": result.get("accuracy"), "flops_reduction": result.get("flops_reduction"),
            "dynamic_fraction": result.get("dynamic_fraction"), "active_fraction": result.get("active_fraction"),
            "energetic_fraction": result.get("energetic_fraction"), "silent_fraction": result.get("silent_fraction"),
            "variant": result.get("variant"), "sparsity_ratio": ratios_text(config.get("sparsity_ratio")),
            "sparsity_form": config.get("sparsity_form"), "lambda_mi": config.get("lambda_mi"),
            "ramp_epochs": config.get("sparsity_ratio_ramp_epochs"),
            "path_finetune_epochs": config.get("path_finetune_epochs"),
            "distill_weight": options.get("distill_weight"), "distill_phase": options.get("distill_phase"),
            "flops_target": options.get("flops_target"), "seed": train.get("seed"),
            "last_epoch": last.get("epoch"), "last_epoch_top1": last.get("gated_accuracy", last.get("test_accuracy")),
            "last_epoch_flops_reduction": last.get("gated_flops_reduction"),
            "reevaluated_top1": (result.get("reevaluated") or {}).get("accuracy"),
        })
    return rows


def baselines_rows(path: Path, result: dict) -> list[dict]:
    return [{"run": path.stem, "model": result["model"], "epochs": result["epochs"], "top1": result["test_accuracy"],
             "top1_before": result["test_accuracy_before"], "test_loss": result["test_loss"],
             "seed": result.get("schedule", {}).get("seed")}]


def static_pruning_rows(path: Path, result: dict) -> list[dict]:
    return [{"run": path.stem, "model": result["model"], "epochs": result["epochs"],
             "kept_ratio": result.get("kept_ratio", result.get("kept_filters", 0) / max(result.get("gated_filters", 1), 1)),
             "pruned_units": result["pruned_units"], "top1": result["test_accuracy"],
             "flops_reduction": result["flops_reduction"], "distill_weight": result.get("distill_weight"),
             "seed": result.get("seed")}]


def threshold_rows(path: Path, result: dict) -> list[dict]:
    chosen = result.get("chosen", {})
    rows = [dict(row, chosen=False) for row in result["rows"]]
    if chosen:
        rows.append(dict(chosen, chosen=True))
    return [{"run": path.stem, "model": result["model"], "decoupled_run": result["run"], "threshold": row["threshold"],
             "chosen": row["chosen"], "top1": row["accuracy"], "flops_reduction": row["flops_reduction"],
             "dynamic_fraction": row["dynamic_fraction"], "active_fraction": row["active_fraction"]} for row in rows]


def path_class_information_rows(path: Path, result: dict) -> list[dict]:
    model = path.stem.removeprefix("path_class_information_")
    return [{"run": path.stem, "model": model, "decoupled_run": row["run"], "lambda_mi": row["lambda_mi"],
             "network_top1": row["network_accuracy"], "flops_reduction": row["flops_reduction"],
             "dynamic_filters_train": row["dynamic_filters_train"], "filters": row["filters"],
             "path_classifier_top1": row["path_classifier_accuracy"],
             "agreement_with_network": row["agreement_with_network"], "chance": row["chance"]}
            for row in result["runs"]]


def influence_rows(path: Path, result: dict) -> list[dict]:
    if "models" in result:  # influence_resnet: the decomposed final layer, per model and criterion
        k = result["k"]
        return [{"run": path.stem, "model": model, "measure": "decomposed final layer", "criterion": criterion,
                 "k1": k, "k2": k, "top1": values[f"k{k}_{criterion}"]["accuracy_decomposed"],
                 "top1_dense": values["accuracy_full"], "relative_accuracy": values[f"k{k}_{criterion}"]["relative_accuracy"]}
                for model, values in result["models"].items() for criterion in ("l1", "contribution")]
    if "runs" in result:  # influence_retrain: whole-network retraining, decomposed and dense control
        epochs = result["schedule"]["epochs"]
        return [{"run": f"{path.stem}/{name}", "model": result["model"],
                 "measure": f"whole-network retraining, {epochs} epoch(s)",
                 "criterion": result["criterion"] if name.startswith("decomposed") else "", "k1": result["k1"],
                 "k2": result["k2"], "top1_before": run["test_accuracy_before"], "top1": run["test_accuracy_after"]}
                for name, run in result["runs"].items()]
    return [{"run": path.stem, "model": result["model"], "measure": "Algorithm 1 pass over plain inference, time",
             "k1": result["k1"], "k2": result["k2"], "seconds_ratio": result["ratio_mean"]}]


def semantic_pruning_rows(path: Path, result: dict) -> list[dict]:
    return [{"run": path.stem, "model": model, "class": CIFAR10_CLASSES[row["class_index"]], "mode": row["mode"],
             "theta": row["setting"], "recall": row["recall"], "precision": row["precision"], "auc": row["auc"],
             "accuracy": row["accuracy"], "predicted_share": row["predicted_share"],
             "fraction_direct": row["fraction_direct"], "fraction_residual": row["fraction_residual"],
             "dead": row["dead"]}
            for model, values in result["models"].items() for row in values["rows"]]


def overhead_rows(path: Path, result: dict) -> list[dict]:
    medians = result["step_seconds_median"]
    if "overhead_ratio" in result:  # decouple_overhead: gates and losses against the plain step, eager and compiled
        ratio = {"plain": (1.0, "plain"), "decoupled": (result["overhead_ratio"]["eager"], "plain"),
                 "plain_compiled": (1.0, "plain_compiled"),
                 "decoupled_compiled": (result["overhead_ratio"]["compiled"], "plain_compiled")}
    else:  # distill_overhead: a teacher's forward pass against the step without one
        ratio = {setting: (value, "no_teacher") for setting, value in result["ratio_to_no_teacher"].items()}
    return [{"run": path.stem, "model": result["model"], "setting": setting, "batch_size": result["batch_size"],
             "threads": result["threads"], "repeats": result["repeats"], "step_seconds_median": median,
             "ratio": ratio[setting][0], "ratio_to": ratio[setting][1]} for setting, median in medians.items()]


def path_interpretation_rows(path: Path, result: dict) -> list[dict]:
    rows = []
    for key in ("embedding", "embedding_pretrained_dense"):
        embedding = result[key]
        for name, scores in embedding["representations"].items():
            if key != "embedding" and name == "decoupled_paths":
                continue  # the same paths as in the first embedding
            adjusted = [layer["mi_adjusted"] for layer in scores["mutual_information"].values()]
            rows.append({"run": path.stem, "model": result["model"], "measure": "path embedding", "setting": name,
                         "dense_source": embedding["dense_source"] if name != "decoupled_paths" else "",
                         "samples": embedding["num_inputs"], "knn_k": embedding["knn_neighbours"],
                         "knn_accuracy": scores["knn_accuracy"], "silhouette_2d": scores["silhouette_embedding"],
                         "silhouette_pca": scores["silhouette_pca"], "mean_mi_adjusted": sum(adjusted) / len(adjusted),
                         "distinct_inputs": scores["distinct_inputs"]})
    for row in result["threshold_study"]["sweep"]:
        rows.append({"run": path.stem, "model": result["model"], "measure": "Hopkins tree", "setting": "decoupled_paths",
                     "samples": result["samples"], "threshold": row["threshold"], "splits": row["splits"],
                     "shuffled_splits": "/".join(map(str, row["shuffled_splits"]))})
    return rows


def engine_rows(path: Path, result: dict) -> list[dict]:
    if result.get("study") == "static ceiling":
        return [{"run": path.stem, "model": result["model"], "measure": "static ceiling, batch 1", "setting": row["pattern"],
                 "flops_reduction": row["flops_reduction"], "median": row["latency_us"]["median"],
                 "p10": row["latency_us"]["p10"], "p90": row["latency_us"]["p90"], "unit": "us",
                 "speedup_vs_faster_dense": row["speedup"]} for row in result["rows"]]
    if result.get("study") == "gate cost in place":
        return gate_cost_rows(path, result)
    rows = [{"run": path.stem, "model": result["model"], "measure": "latency batch 1", "setting": row["name"],
             "top1": row["accuracy"], "flops_reduction": row["flops_reduction"], "median": row["latency_us"]["median"],
             "p10": row["latency_us"]["p10"], "p90": row["latency_us"]["p90"], "unit": "us",
             "speedup_vs_faster_dense": row["speedup"]} for row in result["rows"]]
    for route, times in result["routes"].items():
        for which in ("dense", "executor"):
            timing = times[f"{which}_us"]
            rows.append({"run": path.stem, "model": result["model"], "measure": f"route {route}", "setting": which,
                         "median": timing["median"], "p10": timing["p10"], "p90": timing["p90"], "unit": "us"})
    settings = result["settings"]
    for name, value in result["throughput"].items():
        rows.append({"run": path.stem, "model": result["model"],
                     "measure": f"throughput batch {settings['batch_size']}, {settings['throughput_threads']} threads",
                     "setting": name, "median": value["median"], "p10": value["p10"], "p90": value["p90"],
                     "unit": "images/s"})
    return rows


def gate_cost_rows(path: Path, result: dict) -> list[dict]:
    """Per gated unit and gate kernel, the gate's time per call in place; per model, the wrapped pass per image."""
    rows = [{"run": path.stem, "model": result["model"], "measure": f"gate in place, {unit['unit']}", "setting": kernel,
             "median": unit[kernel]["gate_us"], "unit": "us per call"}
            for unit in result["units"] for kernel in result["gate_kernels"]]
    rows += [{"run": path.stem, "model": result["model"], "measure": "pass with timers in place, batch 1", "setting": name,
              "median": value, "unit": "us"} for name, value in result["passes_us"].items()]
    return rows


def concepts_rows(path: Path, result: dict) -> list[dict]:
    """One row per stage: occlusion per fill (IoUs with the box), colour dissection per model variant (scores)."""
    settings = result["settings"]
    rows = [{"run": path.stem, "model": "resnet20", "analysis": "occlusion", "setting": f"fill {fill}, box {settings['box']}",
             "stage": stage, "images": settings["occlusion_images"], **values}
            for fill, found in result["occlusion"].items() for stage, values in found["per_stage"].items()]
    rows += [{"run": path.stem, "model": "resnet20", "analysis": "colour dissection", "setting": variant, "stage": stage,
              "images": settings["dissect_images"], "score": values["score"], "filters_with_field": values["filters_with_field"],
              "filters": values["filters"], "control_score": values["shuffled_score"], "detectors": values["detectors"]}
             for variant, found in result["dissection"].items() for stage, values in found["per_stage"].items()]
    return rows


def adversarial_rows(path: Path, result: dict) -> list[dict]:
    """One row per (train attack, test attack, classifier, n, feature) of the Table 6 grid."""
    config = result["config"]
    return [{"run": path.stem, "model": result["model"], "train_attack": row["train_attack"],
             "test_attack": row["test_attack"], "eps": config["eps"], "classifier": row["classifier"], "n": row["n"],
             "feature": row["feature"], "auc_mean": row["auc_mean"], "auc_std": row["auc_std"], "runs": len(row["aucs"]),
             "test_per_class": result["test_per_class"],
             "test_success_rate": result["attacks"][row["test_attack"]]["test"]["success_rate"]}
            for row in result["table"]]


def bn_free_vgg_rows(path: Path, result: dict) -> list[dict]:
    """The dense BN-free VGG and the network decoupled from it."""
    dense, decoupled = result["dense"], result["decoupled"]
    return [{"run": path.stem, "model": "plain_vgg_cifar", "network": "dense", "epochs": dense["epochs"],
             "top1": dense["accuracy"], "flops_reduction": 1.0},
            {"run": path.stem, "model": "plain_vgg_cifar", "network": "dense trained on (control)",
             "epochs": result["dense_trained_on"]["epochs"], "top1": result["dense_trained_on"]["accuracy"], "flops_reduction": 1.0},
            {"run": path.stem, "model": "plain_vgg_cifar", "network": "decoupled", "epochs": decoupled["epochs"],
             "top1": decoupled["accuracy"], "flops_reduction": decoupled["flops_reduction"],
             "energetic": decoupled["energetic"], "silent": decoupled["silent"], "dynamic": decoupled["dynamic"]}]


ROWS = {"decoupling": decoupling_rows, "engine": engine_rows, "baselines": baselines_rows, "static_pruning": static_pruning_rows,
        "threshold": threshold_rows, "path_class_information": path_class_information_rows,
        "influence": influence_rows, "semantic_pruning": semantic_pruning_rows, "overhead": overhead_rows,
        "concepts": concepts_rows,
        "adversarial": adversarial_rows, "bn_free_vgg": bn_free_vgg_rows,
        "path_interpretation": path_interpretation_rows}


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_study_table(study: str) -> Path:
    """Write ``benchmarks/<study>/runs.csv`` from ``benchmarks/<study>/results/*.json``; return its path."""
    folder = BENCHMARKS / study
    rows = []
    for path in sorted((folder / "results").glob("*.json")):
        for row in ROWS[study](path, json.loads(path.read_text())):
            rows.append({**row, "json": f"results/{path.name}"})
    target = folder / "runs.csv"
    with target.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS[study], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: cell(row.get(column)) for column in COLUMNS[study]})
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("studies", nargs="*", help=f"default: every study ({', '.join(COLUMNS)})")
    studies = parser.parse_args().studies or list(COLUMNS)
    unknown = sorted(set(studies) - set(COLUMNS))
    if unknown:
        parser.error(f"no study {', '.join(unknown)}; the studies are {', '.join(COLUMNS)}")
    for study in studies:
        target = write_study_table(study)
        print(f"{target.relative_to(BENCHMARKS)}: {sum(1 for _ in target.open()) - 1} rows")


if __name__ == "__main__":
    main()
