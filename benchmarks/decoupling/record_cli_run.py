"""Record a finished ``filterscope decouple`` run (the CLI, not ``decouple_resnet20.py``) as this study's results JSON.

The CLI writes its settings and numbers into the run directory (``config.yaml``, ``metrics.json``,
``environment.json``); this copies them into ``results/decouple_<name>.json`` and ``.md`` in the layout the
script's runs use (``train_config``, ``decouple_config``, ``options``, the final numbers, the per-epoch
history), so a bundled recipe can cite the run and ``tests/test_recipes.py`` can check the recipe against it.

    python benchmarks/decoupling/record_cli_run.py --run-dir runs/r20-fast --name <name> \\
        --command "the filterscope decouple command(s) the run was made with"
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
FINAL = ("accuracy", "num_samples", "mean_flops", "dense_flops", "flops_reduction", "active_fraction",
         "active_fraction_per_layer", "filters", "energetic_fraction", "silent_fraction", "dynamic_fraction")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, help="the finished run's directory")
    parser.add_argument("--name", required=True, help="results/decouple_<name>.json")
    parser.add_argument("--command", required=True, action="append", help="a command the run was made with (repeatable)")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    files = {name: run_dir / name for name in ("config.yaml", "metrics.json", "environment.json")}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        print(f"error: {', '.join(missing)} missing; give --run-dir the directory of a finished decoupling run.", file=sys.stderr)
        return 2
    decoupled = json.loads(files["metrics.json"].read_text())["decouple"]
    if "accuracy" not in decoupled:
        print(f"error: {run_dir} has not finished (no final accuracy in metrics.json); resume it first.", file=sys.stderr)
        return 2
    train_config = {k: v for k, v in yaml.safe_load(files["config.yaml"].read_text()).items() if k != "verb"}
    result = {"model": decoupled["model"], "data": decoupled["data"], "epochs": decoupled["epochs"],
              "decouple_config": decoupled["decouple_config"], "options": {**decoupled["options"], "use_kl": False}
              if decoupled["decouple_config"].get("lambda_kl", 0) == 0 else decoupled["options"],
              **{key: decoupled[key] for key in FINAL if key in decoupled}, "history": decoupled["history"],
              "train_config": train_config, "run_commands": args.command,
              "run_environment": json.loads(files["environment.json"].read_text())}
    table = (f"# {args.name}\n\n| top-1 | FLOPs reduction | energetic | silent | dynamic |\n|---|---|---|---|---|\n"
             f"| {result['accuracy']:.4f} | {result['flops_reduction']:.3f}× | {result['energetic_fraction']:.3f} | "
             f"{result['silent_fraction']:.3f} | {result['dynamic_fraction']:.3f} |\n")
    write_results(f"decouple_{args.name}", result, table, directory=RESULTS)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
