"""Where a unit's response is read, for semantic pruning: post, response and bn side by side.

Runs `filterscope semantic-prune` once per read-out (ResNet-20 from the shared checkpoint, class cat,
network-wise, θ 0.05 and 0.1, responses from the training split, evaluated on the test split), keeps
each run's JSON under results/, and draws results/readout_<model>_<class>.png: recall, precision,
AUC and overall accuracy per read-out and θ.

    python benchmarks/semantic_pruning/readout/readout.py --model resnet20 --classes cat
    python benchmarks/semantic_pruning/readout/readout.py --draw-only    # redraw from the kept JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FILTERSCOPE_SHARED", HERE.parents[2].parent / "shared"))
CHECKPOINTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
READOUTS = ("post", "response", "bn")
# Models that are not built in, by the plugin that registers them (their weights come from --weights).
PLUGINS = {"mobilenet_v2_zoo": HERE / "mobilenet_v2_plugin.py"}


def run(model: str, klass: str, where: str, weights: str | None = None) -> Path:
    """One semantic-prune run; ``weights`` other than the shared checkpoint of ``model`` need ``PLUGINS[model]``."""
    out = HERE / "results" / f"readout_{model}_{klass}_{where}.json"
    plugin = ["--plugin", str(PLUGINS[model])] if model in PLUGINS else []
    weights = weights or str(SHARED / "models" / CHECKPOINTS[model])
    command = ["filterscope", *plugin, "semantic-prune", "--model", model, "--weights", weights,
               "--data", str(SHARED / "data" / "cifar10-jpeg.zip"), "--classes", klass, "--mode", "nwp",
               "--ratios", "0.05", "0.1", "--where", where, "--threads", "1", "--json", "--quiet"]
    summary = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    import torch

    shown = [a.replace(str(SHARED), "<shared>").replace(str(HERE.parents[2]), "<repository>") for a in command]
    summary["provenance"] = {"command": " ".join(shown),
                             "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                         "python": platform.python_version(), "torch": torch.__version__}}
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    return out


def draw(model: str, klass: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = ("recall", "precision", "auc", "accuracy")
    figure, axes = plt.subplots(1, len(measures), figsize=(13, 3.2), sharey=True)
    for axis, measure in zip(axes, measures):
        present = [w for w in READOUTS if (HERE / "results" / f"readout_{model}_{klass}_{w}.json").exists()]
        for offset, where in enumerate(present):
            rows = json.loads((HERE / "results" / f"readout_{model}_{klass}_{where}.json").read_text())["results"]
            thetas = [float(row["setting"]) for row in rows]
            axis.bar([i + 0.27 * (offset - 1) for i in range(len(rows))], [row[measure] for row in rows], width=0.27,
                     label=where)
            axis.set_xticks(range(len(rows)), [f"θ {t:g}" for t in thetas])
        axis.set_title(measure)
        axis.set_ylim(0, 1)
    axes[0].legend(title="read-out", fontsize=8)
    figure.suptitle(f"Semantic pruning of {model} for class {klass}, network-wise: where the response is read")
    figure.tight_layout()
    path = HERE / "results" / f"readout_{model}_{klass}.png"
    figure.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=sorted({*CHECKPOINTS, *PLUGINS}))
    parser.add_argument("--weights", help="checkpoint (default: the shared one of --model)")
    parser.add_argument("--classes", nargs="+", default=["cat"])
    parser.add_argument("--draw-only", action="store_true")
    args = parser.parse_args()
    for klass in args.classes:
        if not args.draw_only:
            for where in READOUTS:
                print(run(args.model, klass, where, args.weights), file=sys.stderr)
        print(draw(args.model, klass))


if __name__ == "__main__":
    main()
