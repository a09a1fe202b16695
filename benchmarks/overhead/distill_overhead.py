"""What a distillation teacher costs a compiled decoupled training step: eager teacher against compiled teacher.

Times one SGD step of path fine-tuning (gates frozen; forward, CE + distillation, backward, update) of a decoupled
ResNet with its student under ``torch.compile`` (what ``--compile`` does), three ways: no teacher, the dense
teacher run eagerly (how the ResNet-56 distillation runs were trained), and the teacher under ``torch.compile``
too (``Teacher(compile=True)``, what ``--compile`` now does). The three are measured side by side in one run on
the same random batch, in alternating blocks of consecutive steps (a block's first step is not timed), so each
is timed in its own steady state; reports medians and their ratios to the step without a teacher.

    python benchmarks/overhead/distill_overhead.py [--model resnet20] [--repeats 4] [--block 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import results_dir, write_results

from filterscope.methods.decoupling import DecoupleConfig, DecouplingObjective, decouple
from filterscope.models import create_model

RESULTS = results_dir("overhead")

STEPS_PER_EPOCH, EPOCHS = 390, 30
SETUPS = ("no_teacher", "eager_teacher", "compiled_teacher")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=4, help="blocks of each setup")
    parser.add_argument("--block", type=int, default=6, help="consecutive steps per block (the first is not timed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dense = create_model(args.model, 10)
    # The recipe of the 30-epoch runs: inner convs gated, the last 10 epochs path fine-tuning.
    config = DecoupleConfig(preset="auto", include=["layer*.conv1"], path_finetune_epochs=10)
    images = torch.randn(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))
    finetune_step = (EPOCHS - 5) * STEPS_PER_EPOCH
    steps, compile_seconds = {}, {}
    for setup in SETUPS:
        student = decouple(dense, config, num_classes=10, model_name=args.model).train()
        objective = DecouplingObjective(
            student, STEPS_PER_EPOCH, total_epochs=EPOCHS, teacher=None if setup == "no_teacher" else dense,
            distill_weight=1.0, distill_phase="path_finetune", compile_teacher=setup == "compiled_teacher",
        )
        optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
        compiled = torch.compile(student)

        def step(objective=objective, optimizer=optimizer, compiled=compiled) -> None:
            optimizer.zero_grad(set_to_none=True)
            objective(compiled, images, labels, finetune_step)[0].backward()
            optimizer.step()

        start = time.perf_counter()
        step()  # the first call compiles (the student, and the teacher where it is compiled)
        compile_seconds[setup] = time.perf_counter() - start
        steps[setup] = step
    times = {setup: [] for setup in SETUPS}
    for _ in range(args.repeats):
        for setup in SETUPS:
            steps[setup]()
            for _ in range(args.block - 1):
                start = time.perf_counter()
                steps[setup]()
                times[setup].append(time.perf_counter() - start)
    medians = {setup: statistics.median(values) for setup, values in times.items()}
    ratios = {setup: medians[setup] / medians["no_teacher"] for setup in SETUPS}
    results = {
        "model": args.model, "batch_size": args.batch_size, "repeats": args.repeats, "block": args.block,
        "threads": args.threads, "seed": 0, "step_seconds_median": medians, "ratio_to_no_teacher": ratios,
        "eager_over_compiled_teacher": medians["eager_teacher"] / medians["compiled_teacher"],
        "compile_seconds": compile_seconds, "times": times,
    }
    rows = "".join(f"| {setup.replace('_', ' ')} | {medians[setup]:.3f} | {ratios[setup]:.3f} |\n" for setup in SETUPS)
    table = (f"# Cost of a distillation teacher in a compiled decoupled training step ({args.model}, batch {args.batch_size}, "
             f"{args.threads} threads)\n\nPath fine-tuning step (gates frozen, CE + distillation), student under torch.compile; "
             f"the three setups in alternating blocks of {args.block} steps (first of each untimed), {args.repeats} blocks each, "
             f"medians.\n\n| step | median seconds | ratio to no teacher |\n|---|---|---|\n{rows}\n"
             f"Eager teacher over compiled teacher: {results['eager_over_compiled_teacher']:.3f}×.\n")
    print(table)
    write_results(f"distill_overhead_{args.model}", results, table, directory=RESULTS)


if __name__ == "__main__":
    main()
