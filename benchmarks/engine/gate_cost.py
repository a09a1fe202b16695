"""What a gate costs inside the running executor: each gated unit's gate, filter selection and whole call, timed in
place (between the convolutions it serves) for every gate kernel, beside the same unit in the per-path static copies.

A gate timed alone in a loop runs with warm caches and looks 2–4× cheaper than it is between two convolutions
(see ``filterscope/engine/gate_program.py``), so this study wraps the executor's own methods with timers and runs
the network as the bench does: batch 1, one thread, test images each on its own path, the models' order rotating
between repeats. Every network of the run is wrapped alike, so the wrappers' own cost (well under a microsecond
per call) is in every column; the whole-pass times are therefore a little above the bench's.

    python benchmarks/engine/gate_cost.py --name resnet20_skip_seed1 --weights checkpoints/resnet20-cifar10-2x-skip-seed1.pt
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BENCHMARKS, results_dir, sha256, write_results  # noqa: E402

from filterscope.core.locations import shared_dir  # noqa: E402
from filterscope.core.threads import use_threads  # noqa: E402
from filterscope.data import load_dataset  # noqa: E402
from filterscope.engine import compile_decoupled  # noqa: E402
from filterscope.engine.executed_unit import ExecutedUnit  # noqa: E402
from filterscope.engine.gate_program import GATE_KERNELS, GateProgram  # noqa: E402
from filterscope.engine.latency import time_latency  # noqa: E402
from filterscope.methods.decoupling import load_decoupled  # noqa: E402
from filterscope.models.registry import model_spec  # noqa: E402
from filterscope.pipelines.bench import per_path_copies  # noqa: E402

REPOSITORY = BENCHMARKS.parent
SPENT: dict[tuple[int, str], float] = defaultdict(float)  # (id of the unit or gate, part) → seconds
CALLS: dict[tuple[int, str], int] = defaultdict(int)


def timed(part: str, method):
    """``method`` with its time added to SPENT under (id(self), part)."""
    def wrapper(self, *args):
        start = time.perf_counter()
        result = method(self, *args)
        SPENT[id(self), part] += time.perf_counter() - start
        CALLS[id(self), part] += 1
        return result
    return wrapper


def install_timers() -> None:
    """Wrap the parts before any network is built: a flattened network binds its units' forward at build time."""
    ExecutedUnit.forward = timed("unit", ExecutedUnit.forward)
    ExecutedUnit._select = timed("select", ExecutedUnit._select)
    GateProgram.opened = timed("gate", GateProgram.opened)


def per_call_us(key: int, part: str) -> float | None:
    calls = CALLS.get((key, part), 0)
    return SPENT[key, part] / calls * 1e6 if calls else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="results/gate_cost_<name>.json")
    parser.add_argument("--weights", default=str(REPOSITORY / "checkpoints" / "resnet20-cifar10-2x-skip-seed1.pt"))
    parser.add_argument("--data", default=str(shared_dir() / "data" / "cifar10-jpeg.zip"))
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--calibration", type=int, default=5000)
    args = parser.parse_args()
    install_timers()
    decoupled = load_decoupled(args.weights).eval()
    spec = model_spec(decoupled.model_name)
    test = load_dataset(args.data, "test", mean=spec.mean, std=spec.std, expected_image_shape=spec.input_shape)
    train = load_dataset(args.data, "train", mean=spec.mean, std=spec.std, expected_image_shape=spec.input_shape)
    calibration = torch.stack([train[i * len(train) // args.calibration][0] for i in range(args.calibration)])
    inputs = torch.stack([test[i * len(test) // args.inputs][0] for i in range(args.inputs)])
    use_threads(1)
    executors = {kernel: compile_decoupled(decoupled, calibration, gates=kernel) for kernel in GATE_KERNELS}
    static = per_path_copies(decoupled, executors[GATE_KERNELS[0]], inputs)
    runs = {f"executor, {kernel} gates": executor for kernel, executor in executors.items()}
    passes = timed_passes(runs, static, inputs, args.repeats)
    result = {"study": "gate cost in place", "model": decoupled.model_name, "checkpoint": args.weights,
              "checkpoint_sha256": sha256(args.weights), "gate_kernels": {k: e.gate_kernels() for k, e in executors.items()},
              "units": unit_rows(executors, static), "passes_us": passes,
              "settings": {"inputs": args.inputs, "repeats": args.repeats, "calibration": args.calibration, "threads": 1}}
    table = markdown(result)
    write_results(f"gate_cost_{args.name}", result, table, directory=results_dir("engine"))
    print(table)


def timed_passes(runs: dict, static: list, inputs: torch.Tensor, repeats: int) -> dict:
    """Median µs per image of each model (:func:`time_latency`, the bench's rotating loop), the part timers cleared
    after a first pass so that they hold warm calls only (kernel choices are timed on a unit's first call)."""
    calls = {name: (lambda i, m=model: m(inputs[i:i + 1])) for name, model in runs.items()}
    calls["static per path"] = lambda i: static[i](inputs[i:i + 1])
    with torch.no_grad():
        for run in calls.values():
            for index in range(inputs.shape[0]):
                run(index)
    SPENT.clear()
    CALLS.clear()
    latency = time_latency(calls, inputs.shape[0], repeats=repeats)
    return {name: timing["median"] for name, timing in latency.items()}


def unit_rows(executors: dict, static: list) -> list[dict]:
    """Per gated unit (one with a gate in the executor): its gate, selection and whole call per kernel, and the
    same unit's whole call in the static copies (averaged over the copies' calls)."""
    rows = []
    for name, unit in executors[GATE_KERNELS[0]].network.named_modules():
        if not isinstance(unit, ExecutedUnit) or unit.gate is None:
            continue
        row = {"unit": name, "decided": int(unit.gate.decided.numel())}
        for kernel, executor in executors.items():
            own = executor.network.get_submodule(name)
            row[kernel] = {"gate_us": per_call_us(id(own.gate), "gate"), "select_us": per_call_us(id(own), "select"),
                           "unit_us": per_call_us(id(own), "unit")}
        copies = {id(copy.network.get_submodule(name)): copy for copy in static}
        spent = sum(SPENT[key, "unit"] for key in copies)
        calls = sum(CALLS[key, "unit"] for key in copies)
        row["static_unit_us"] = spent / calls * 1e6 if calls else None
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    kernels = list(result["gate_kernels"])
    head = "| unit | decided | " + " | ".join(f"{k}: gate / select / whole call (µs)" for k in kernels)
    lines = [head + " | static copy: whole call (µs) |", "|---|---|" + "---|" * len(kernels) + "---|"]
    for row in result["units"]:
        cells = [f"{row[k]['gate_us']:.1f} / {row[k]['select_us']:.1f} / {row[k]['unit_us']:.1f}" for k in kernels]
        lines.append(f"| {row['unit']} | {row['decided']} | " + " | ".join(cells) + f" | {row['static_unit_us']:.1f} |")
    static = result["passes_us"]["static per path"]
    lines += ["", "| model (timers in place) | µs per image (median) | vs static per path |", "|---|---|---|"]
    for name, value in result["passes_us"].items():
        lines.append(f"| {name} | {value:.0f} | {value / static:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
