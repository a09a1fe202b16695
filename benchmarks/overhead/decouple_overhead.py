"""Training-step overhead of gates and decoupling losses against the plain model.

Times one SGD step (forward, loss, backward, update) at batch 128 for the plain ResNet and for its
decoupled copy with L = CE + λm·L_mi + λk·L_kl + λs·L_s, interleaved (plain, decoupled, plain, …) on
the same random batch, after warm-up; reports medians and their ratio — in eager mode and with
both models under ``torch.compile`` (what ``--compile`` does in training), measured side by side.

    python benchmarks/overhead/decouple_overhead.py [--model resnet20] [--repeats 20] [--threads 2] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import results_dir, write_results

from filterscope.methods.decoupling import DecoupleConfig, DecouplingObjective, decouple
from filterscope.models import create_model

RESULTS = results_dir("overhead")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="eager mode only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    plain = create_model(args.model, 10).train()
    decoupled = decouple(plain, DecoupleConfig(preset="auto", sparsity_on="evaluation"), num_classes=10, model_name=args.model).train()
    objective = DecouplingObjective(decoupled, steps_per_epoch=390)
    images = torch.randn(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
    gated_optimizer = torch.optim.SGD(decoupled.parameters(), lr=1e-3, momentum=0.9)

    def plain_step(model) -> None:
        plain_optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        plain_optimizer.step()

    def gated_step(model) -> None:
        gated_optimizer.zero_grad(set_to_none=True)
        objective(model, images, labels, 1000)[0].backward()
        gated_optimizer.step()

    steps = {"plain": lambda: plain_step(plain), "decoupled": lambda: gated_step(decoupled)}
    compile_seconds = {}
    if not args.no_compile:
        for name, step, model in (("plain_compiled", plain_step, plain), ("decoupled_compiled", gated_step, decoupled)):
            compiled = torch.compile(model)
            start = time.perf_counter()
            step(compiled)  # the first call compiles
            compile_seconds[name] = time.perf_counter() - start
            steps[name] = lambda step=step, compiled=compiled: step(compiled)
    # Eager and compiled pairs are timed in separate phases: interleaving eager steps with
    # compiled ones slowed the eager steps (two thread pools taking turns), 1.66× against 1.30×.
    times = {name: [] for name in steps}
    for phase in (("plain", "decoupled"), ("plain_compiled", "decoupled_compiled")):
        phase = [name for name in phase if name in steps]
        for _ in range(3):
            for name in phase:
                steps[name]()
        for _ in range(args.repeats):
            for name in phase:
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {"eager": medians["decoupled"] / medians["plain"]}
    if not args.no_compile:
        ratios["compiled"] = medians["decoupled_compiled"] / medians["plain_compiled"]
    results = {
        "model": args.model, "batch_size": args.batch_size, "repeats": args.repeats, "threads": args.threads, "seed": 0,
        "step_seconds_median": medians, "overhead_ratio": ratios, "compile_seconds": compile_seconds,
        "times": times, "gated_layers": len(decoupled.gated_units),
    }
    rows = "".join(f"| {name.replace('_', ' ')} | {value:.3f} |\n" for name, value in medians.items())
    table = (f"# Training-step overhead of decoupling ({args.model}, batch {args.batch_size}, {args.threads} threads)\n\n"
             "Decoupled = gates + CE + L_mi + L_kl + L_s; each pair interleaved (eager pair, then compiled pair) in one run, medians of "
             f"{args.repeats}.\n\n| step | median seconds |\n|---|---|\n{rows}\n"
             + "".join(f"Overhead, {mode}: {100 * (ratio - 1):.1f} % (ratio {ratio:.3f}).\n" for mode, ratio in ratios.items()))
    print(table)
    write_results(f"decouple_overhead_{args.model}", results, table, directory=RESULTS)


if __name__ == "__main__":
    main()
