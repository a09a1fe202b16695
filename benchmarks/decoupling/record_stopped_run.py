"""Record a decoupling run stopped by hand as a calibration result: its per-epoch history, from its run directory.

A run stopped early writes no results JSON of its own; this reads the epochs it finished from the run
directory's ``metrics.json`` and writes ``results/decouple_<model>_calibration_<name>.json`` and ``.md``
(what ``decouple_resnet20.py --table`` lists under calibration runs), with the finished run it is
compared against side by side when ``--against`` names one.

    python benchmarks/decoupling/record_stopped_run.py --run-dir checkpoints/decouple_resnet20_<run> --name <short name> \\
        --why "what the run showed and why it was stopped" --against <finished run's name>
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import results_dir, write_results

RESULTS = results_dir("decoupling")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, help="the stopped run's directory (holds metrics.json and decouple.yaml)")
    parser.add_argument("--name", required=True, help="short name: results/decouple_<model>_calibration_<name>")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--why", required=True, help="one paragraph: what the run showed, why it was stopped")
    parser.add_argument("--against", default=None,
                        help="a finished run of the same model (results/decouple_<model>_<against>.json) to show beside it")
    args = parser.parse_args()

    run_dir = Path(args.run_dir)
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        print(f"error: {metrics} does not exist; give --run-dir the directory of a decoupling run.", file=sys.stderr)
        return 2
    history = json.loads(metrics.read_text())["decouple"]["history"]
    if not history:
        print(f"error: {metrics} holds no finished epoch; there is nothing to record.", file=sys.stderr)
        return 2
    reference = {}
    if args.against:
        path = RESULTS / f"decouple_{args.model}_{args.against}.json"
        if not path.is_file():
            print(f"error: {path} does not exist; --against takes the name of a finished run.", file=sys.stderr)
            return 2
        reference = {row["epoch"]: row for row in json.loads(path.read_text())["history"]}

    header = "| epoch | train top-1 | test top-1 (eval gates) | FLOPs reduction | % dynamic |"
    if reference:
        header += f" test top-1 of `{args.against}` | its FLOPs reduction | its % dynamic |"
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in history:
        cells = [str(row["epoch"]), f"{row['train_accuracy']:.4f}", f"{row['test_accuracy']:.4f}",
                 f"{row['gated_flops_reduction']:.3f}", f"{100 * row['gated_dynamic_fraction']:.1f}"]
        other = reference.get(row["epoch"])
        if reference:
            cells += ([f"{other['test_accuracy']:.4f}", f"{other['gated_flops_reduction']:.3f}",
                       f"{100 * other['gated_dynamic_fraction']:.1f}"] if other else ["–"] * 3)
        lines.append("| " + " | ".join(cells) + " |")
    last = history[-1].get("gated_active_fraction_per_layer", {})
    per_layer = ", ".join(f"{name} {share:.2f}" for name, share in last.items())
    name = f"decouple_{args.model}_calibration_{args.name}"
    table = (f"# Stopped calibration run: {args.name}\n\n{args.why}\n\nRun directory: `{run_dir.name}` "
             f"(settings in its `decouple.yaml`, recorded in the JSON). Active share per gated layer after epoch "
             f"{history[-1]['epoch']}: {per_layer}.\n\n" + "\n".join(lines))
    config = yaml.safe_load((run_dir / "decouple.yaml").read_text())
    print(write_results(name, {"run": run_dir.name, "stopped_after_epochs": history[-1]["epoch"], "why": args.why,
                               "against": args.against, "decouple_config": config, "history": history}, table,
                               directory=RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
