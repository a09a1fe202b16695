"""Gather the BN-free VGG runs of ``run.sh`` into ``results/bn_free_vgg_cifar10.{json,md}``.

Usage: python benchmarks/bn_free_vgg/collect.py [OUT_DIR]   (the run.sh output folder, default runs/bn_free_vgg)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import results_dir, sha256, write_results  # noqa: E402

KEPT = ("test_accuracy", "gated_accuracy", "gated_flops_reduction", "gated_energetic_fraction", "gated_silent_fraction",
        "gated_dynamic_fraction", "gate_threshold", "epoch_seconds")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bn_free_vgg")
    dense = json.loads((out / "dense" / "metrics.json").read_text())["train"]
    decoupled = json.loads((out / "decoupled" / "metrics.json").read_text())["decouple"]
    evaluations = {name: json.loads((out / f"eval_{name}.json").read_text()) for name in ("dense", "dense_more", "decoupled")}
    control = json.loads((out / "dense_more" / "metrics.json").read_text())["train"]
    history = [{key: row[key] for key in ("epoch", *KEPT) if key in row} for row in decoupled["history"]]
    last = decoupled["history"][-1]
    results = {
        "model": "plain_vgg_cifar (benchmarks/bn_free_vgg/plain_vgg.py)",
        "data": "CIFAR-10 JPEG, train split for training, test split for every number",
        "commands": (Path(__file__).parent / "run.sh").read_text().splitlines(),
        "dense": {"accuracy": dense["final"]["accuracy"], "epochs": dense["final"]["epochs"],
                  "wall_seconds": dense["final"].get("wall_seconds_this_process"),
                  "history": [{key: row.get(key) for key in ("epoch", "train_accuracy", "test_accuracy", "epoch_seconds")}
                              for row in dense["history"]]},
        "dense_trained_on": {"accuracy": control["final"]["accuracy"], "epochs": control["final"]["epochs"],
                             "history": [{key: row.get(key) for key in ("epoch", "train_accuracy", "test_accuracy")}
                                         for row in control["history"]]},
        "decoupled": {"accuracy": last["gated_accuracy"], "flops_reduction": last["gated_flops_reduction"],
                      "energetic": last.get("gated_energetic_fraction"), "silent": last.get("gated_silent_fraction"),
                      "dynamic": last.get("gated_dynamic_fraction"), "gate_threshold": last.get("gate_threshold"),
                      "epochs": len(decoupled["history"]), "history": history},
        "eval": evaluations,
        "checkpoints_sha256": {name: sha256(out / name / "checkpoints" / "last.pt") for name in ("dense", "dense_more", "decoupled")},
    }
    rows = ["| network | epochs | top-1 (test) | FLOPs reduction | gated filters energetic / silent / dynamic |",
            "|---|---|---|---|---|",
            f"| dense, no BatchNorm | {results['dense']['epochs']} | {results['dense']['accuracy']:.4f} | 1.00× | – |",
            f"| dense, trained on as long as the decoupling (the control) | +{results['dense_trained_on']['epochs']} | "
            f"{results['dense_trained_on']['accuracy']:.4f} | 1.00× | – |",
            f"| decoupled from it | +{results['decoupled']['epochs']} | {results['decoupled']['accuracy']:.4f} | "
            f"{results['decoupled']['flops_reduction']:.2f}× | {last['gated_energetic_fraction']:.3f} / "
            f"{last['gated_silent_fraction']:.3f} / {last['gated_dynamic_fraction']:.3f} |",
            "", "Decoupling, per epoch (test split):", "",
            "| epoch | top-1 | FLOPs reduction | dynamic share | threshold |", "|---|---|---|---|---|"]
    rows += [f"| {row['epoch']} | {row['gated_accuracy']:.4f} | {row['gated_flops_reduction']:.2f}× | "
             f"{row.get('gated_dynamic_fraction', float('nan')):.3f} | {row.get('gate_threshold', 0.0):+.3f} |" for row in history]
    write_results("bn_free_vgg_cifar10", results, "\n".join(rows), directory=results_dir("bn_free_vgg"))


if __name__ == "__main__":
    main()
