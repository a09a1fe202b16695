"""Where closing filters buys time: statically shaped copies of a decoupled network with a fixed share of each
stage's gated filters open, timed at batch 1 against the dense network through the same executor.

A decoupled checkpoint's per-path static copies are the executor's ceiling (``filterscope bench``); this study
asks which *pattern* of open filters has a high ceiling, before any checkpoint is trained for it. Each pattern
keeps the first ``round(share × filters)`` filters of every gated unit of a stage open in every input (which
filters does not change the time; the weights are the checkpoint's, so no accuracy is claimed), and is built
with :meth:`ExecutedNetwork.specialized`, the same code as the per-path static rows of the bench. The FLOPs
reduction of each pattern comes from the checkpoint's own gated cost model.

    python benchmarks/engine/static_ceiling.py --name resnet20 --weights checkpoints/resnet20-cifar10-2x-seed1.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BENCHMARKS, results_dir, sha256, write_results  # noqa: E402

from filterscope.core.threads import use_threads  # noqa: E402
from filterscope.engine import compile_decoupled, compile_network  # noqa: E402
from filterscope.engine.latency import time_latency  # noqa: E402
from filterscope.methods.decoupling import load_decoupled  # noqa: E402

REPOSITORY = BENCHMARKS.parent
# Open share per stage (first, second, last), each pattern at or near 2x fewer FLOPs but the first ones.
PATTERNS = {"uniform 0.5": (0.5, 0.5, 0.5), "0.75/0.5/0.25": (0.75, 0.5, 0.25), "0.25/0.5/0.75": (0.25, 0.5, 0.75),
            "0.125/0.5/0.875": (0.125, 0.5, 0.875), "0.0625/0.5/0.9375": (0.0625, 0.5, 0.9375),
            "0/0.5/1 (first stage skipped)": (0.0, 0.5, 1.0), "1/0.5/0 (last stage skipped)": (1.0, 0.5, 0.0)}


def pattern_gates(decoupled, shares: tuple[float, ...]) -> list[torch.Tensor]:
    """One 0/1 vector per gated unit: the first round(share × N) filters of each stage's units open."""
    stage_of = [int(name.split(".")[0].removeprefix("layer")) - 1 for name in decoupled.gated_units]
    gates = []
    for stage, filters in zip(stage_of, decoupled.out_channels):
        gate = torch.zeros(filters)
        gate[: int(round(shares[stage] * filters))] = 1
        gates.append(gate)
    return gates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="results/ceiling_<name>.json")
    parser.add_argument("--weights", default=str(REPOSITORY / "checkpoints" / "resnet20-cifar10-2x-seed1.pt"))
    parser.add_argument("--inputs", type=int, default=50, help="random inputs per pass (timing does not depend on them)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    use_threads(1)
    decoupled = load_decoupled(args.weights).eval()
    if not all(name.startswith("layer") for name in decoupled.gated_units):
        raise SystemExit("static_ceiling.py reads the stage from unit names like layer1.0.conv1 (CIFAR ResNets).")
    inputs = torch.randn(args.inputs, *decoupled.input_shape, generator=torch.Generator().manual_seed(args.seed))
    dense = compile_network(decoupled)
    every_gate_decided = compile_decoupled(decoupled)  # no calibration: every filter can be fixed by a pattern
    copies, flops = {}, {}
    dense_flops = decoupled.cost_model.dense_flops
    for name, shares in PATTERNS.items():
        gates = pattern_gates(decoupled, shares)
        copies[name] = every_gate_decided.specialized(gates)
        flops[name] = float(decoupled.cost_model.per_input([gate[None] for gate in gates])[0])
    models = {"dense executor": lambda i: dense(inputs[i:i + 1])}
    models.update({name: (lambda copy: lambda i: copy(inputs[i:i + 1]))(copy) for name, copy in copies.items()})
    latency = time_latency(models, args.inputs, repeats=args.repeats)
    dense_us = latency["dense executor"]["median"]
    rows = [{"pattern": "dense", "shares": [1.0, 1.0, 1.0], "flops_reduction": 1.0, "latency_us": latency["dense executor"],
             "speedup": 1.0}]
    rows += [{"pattern": name, "shares": list(PATTERNS[name]), "flops_reduction": dense_flops / flops[name],
              "latency_us": latency[name], "speedup": dense_us / latency[name]["median"]} for name in PATTERNS]
    table = ["| open share per stage | FLOPs reduction | µs per image (median [p10, p90]) | speedup | speedup ÷ FLOPs |",
             "|---|---|---|---|---|"]
    for row in rows:
        timing = row["latency_us"]
        table.append(f"| {row['pattern']} | {row['flops_reduction']:.2f}× | {timing['median']:.0f} [{timing['p10']:.0f}, "
                     f"{timing['p90']:.0f}] | {row['speedup']:.2f}× | {row['speedup'] / row['flops_reduction']:.2f} |")
    result = {"study": "static ceiling", "model": decoupled.model_name, "checkpoint": args.weights,
              "checkpoint_sha256": sha256(args.weights), "rows": rows,
              "settings": {"inputs": args.inputs, "repeats": args.repeats, "seed": args.seed, "threads": 1}}
    write_results(f"ceiling_{args.name}", result, "\n".join(table), directory=results_dir("engine"))
    print("\n".join(table))


if __name__ == "__main__":
    main()
