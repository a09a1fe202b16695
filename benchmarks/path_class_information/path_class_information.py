"""How much of an input's class its calculation path carries, for finished decoupled runs.

The paper's claim is that L_mi makes the gates' choice depend on the class. This measures it from
the paths alone: a multinomial logistic regression (scikit-learn) learns the class from the binary
path of every training image (`filterscope paths --split train`, recorded here when missing) and is
scored on the test images' paths. Only filters that are dynamic over the training split are
features (the others are constant). Reported beside it: how often the path classifier agrees with
the network's own prediction, and the same classifier on the paths of each stage alone.

The paths are computed from the input, so they carry some class information whatever the losses;
what this shows is how much, and how it moves with λm in runs that differ in nothing else.

    python benchmarks/path_class_information/path_class_information.py --runs ls_mi_conv1_r045_ramp_bnbias_detach_pf3 \
        ls_mi_conv1_r045_ramp_bnbias_detach_pf3_lm01 ls_mi_conv1_r045_ramp_bnbias_detach_pf3_lm10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, model_title, results_dir, write_results
from sklearn.linear_model import LogisticRegression

from filterscope.pipelines.paths import record_checkpoint_paths
from filterscope.methods.decoupling.paths import PathRecord
from filterscope.core.locations import shared_dir

RESULTS = results_dir("path_class_information")
DECOUPLING_RESULTS = results_dir("decoupling")  # the runs whose paths are read


def stage_of(layer_name: str) -> str:
    return layer_name.split(".")[0]  # "layer3.1.conv1" → "layer3"


def path_classifier_accuracy(train: PathRecord, train_paths: np.ndarray, test: PathRecord, test_paths: np.ndarray,
                             columns: np.ndarray, seed: int) -> tuple[float, float]:
    """(test accuracy against the labels, agreement with the network's predictions) of a classifier on ``columns``."""
    if len(columns) == 0:
        return float("nan"), float("nan")
    classifier = LogisticRegression(max_iter=2000, random_state=seed)
    classifier.fit(train_paths[:, columns].astype(np.float32), train.labels)
    predicted = classifier.predict(test_paths[:, columns].astype(np.float32))
    return float((predicted == test.labels).mean()), float((predicted == test.predictions).mean())


def measure(run: str, model: str, data: str, seed: int) -> dict:
    run_dir = CHECKPOINTS / f"decouple_{model}_{run}"
    if not (run_dir / "arrays" / "paths_train.npz").exists():
        record_checkpoint_paths(run_dir, data, split="train", progress=False)
    train = PathRecord.load(run_dir / "arrays" / "paths_train.npz")
    test = PathRecord.load(run_dir / "arrays" / "paths_test.npz")
    decoupled = json.loads((DECOUPLING_RESULTS / f"decouple_{model}_{run}.json").read_text())
    counts = np.concatenate(train.activation_counts)
    dynamic = np.flatnonzero((counts > 0) & (counts < train.num_samples))
    layer_of_column = np.concatenate([[name] * width for name, width in zip(train.layer_names, train.layer_widths)])
    train_paths, test_paths = train.paths(), test.paths()
    started = time.time()
    accuracy, agreement = path_classifier_accuracy(train, train_paths, test, test_paths, dynamic, seed)
    per_stage = {}
    for stage in sorted({stage_of(name) for name in train.layer_names}):
        columns = dynamic[[stage_of(layer_of_column[c]) == stage for c in dynamic]]
        stage_accuracy, _ = path_classifier_accuracy(train, train_paths, test, test_paths, columns, seed)
        per_stage[stage] = {"dynamic_filters": int(len(columns)), "accuracy": stage_accuracy}
    return {
        "run": run,
        "lambda_mi": decoupled["decouple_config"]["lambda_mi"],
        "network_accuracy": test.accuracy,
        "flops_reduction": test.dense_flops / float(test.flops.mean()),
        "dynamic_filters_train": int(len(dynamic)),
        "filters": int(counts.size),
        "path_classifier_accuracy": accuracy,
        "agreement_with_network": agreement,
        "chance": float(np.bincount(test.labels).max() / len(test.labels)),
        "per_stage": per_stage,
        "fit_seconds": time.time() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run names, as in decoupling/results/decouple_<model>_<name>.json")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = str(shared_dir() / "data" / "cifar10-jpeg.zip")
    rows = [measure(run, args.model, data, args.seed) for run in args.runs]
    stages = list(rows[0]["per_stage"])
    table = (
        f"# Class information in the calculation paths, decoupled {model_title(args.model)} (CIFAR-10 JPEG)\n\n"
        "A logistic regression learns the class from the binary path of each training image (dynamic filters only) "
        "and is scored on the test images' paths. Chance: "
        f"{rows[0]['chance']:.2f}. Script: `path_class_information.py`.\n\n"
        "| run | λm | network top-1 | FLOPs reduction | dynamic filters (train) | path → class | path agrees with network | "
        + " | ".join(f"{s} alone" for s in stages) + " |\n|---|---|---|---|---|---|---|" + "---|" * len(stages) + "\n"
        + "\n".join(
            f"| {r['run']} | {r['lambda_mi']:g} | {r['network_accuracy']:.4f} | {r['flops_reduction']:.2f}× | "
            f"{r['dynamic_filters_train']} / {r['filters']} | {r['path_classifier_accuracy']:.4f} | {r['agreement_with_network']:.4f} | "
            + " | ".join(f"{r['per_stage'][s]['accuracy']:.4f} ({r['per_stage'][s]['dynamic_filters']})" for s in stages) + " |"
            for r in rows
        )
        + "\n\nPer stage: accuracy of the same classifier on that stage's dynamic filters alone (their count in brackets).\n"
    )
    write_results(f"path_class_information_{args.model}", {"seed": args.seed, "runs": rows}, table, directory=RESULTS)
    print(table)


if __name__ == "__main__":
    main()
