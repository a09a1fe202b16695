"""Latency and throughput of a decoupled checkpoint through the executor, beside dense, masked, per-path
static and statically pruned models: ``filterscope bench`` with the settings of the engine study, its
results written as this study's per-run JSON and markdown.

    python benchmarks/engine/latency.py --name resnet20_seed1 \
        --pruned checkpoints/resnet20-cifar10-torchpruning-2x.pt --dense-weights <dense checkpoint>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BENCHMARKS, results_dir, sha256, write_results  # noqa: E402

from filterscope.core.locations import shared_dir  # noqa: E402
from filterscope.pipelines.bench import ROUTES, BenchOptions, bench_table, run_bench  # noqa: E402

REPOSITORY = BENCHMARKS.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="results/engine_<name>.json")
    parser.add_argument("--weights", default=str(REPOSITORY / "checkpoints" / "resnet20-cifar10-2x-seed1.pt"))
    parser.add_argument("--data", default=str(shared_dir() / "data" / "cifar10-jpeg.zip"))
    parser.add_argument("--dense-weights", help="dense checkpoint whose accuracy the dense rows report")
    parser.add_argument("--pruned", help="statically pruned checkpoint (models.pruned format)")
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--calibration", type=int, default=5000)
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    args = parser.parse_args()
    options = BenchOptions(weights=args.weights, data=args.data, dense_weights=args.dense_weights, pruned=args.pruned,
                           inputs=args.inputs, repeats=args.repeats, calibration=args.calibration,
                           routes=tuple(args.routes), progress=sys.stderr.isatty())
    result = run_bench(options)
    result["checkpoint_sha256"] = {path: sha256(path) for path in (args.weights, args.dense_weights, args.pruned) if path}
    table = bench_table(result)
    write_results(f"engine_{args.name}", result, table, directory=results_dir("engine"))
    print(table)


if __name__ == "__main__":
    main()
