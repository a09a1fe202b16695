"""Training-step overhead of gates and decoupling losses against the plain model.

Times one SGD step (forward, loss, backward, update) at batch 128 for the plain ResNet and for its
decoupled copy with L = CE + λm·L_mi + λk·L_kl + λs·L_s, interleaved (plain, decoupled, plain, …) on
the same random batch, after warm-up; reports medians and their ratio.

    python benchmarks/decouple_overhead.py [--model resnet20] [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import write_results

from filterscope.decouple import DecoupleConfig, DecouplingObjective, decouple
from filterscope.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
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

    def plain_step() -> None:
        plain_optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(plain(images), labels).backward()
        plain_optimizer.step()

    def gated_step() -> None:
        gated_optimizer.zero_grad(set_to_none=True)
        objective(decoupled, images, labels, 1000)[0].backward()
        gated_optimizer.step()

    for _ in range(3):
        plain_step(), gated_step()
    times = {"plain": [], "decoupled": []}
    for _ in range(args.repeats):
        for name, step in (("plain", plain_step), ("decoupled", gated_step)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    plain_median, gated_median = statistics.median(times["plain"]), statistics.median(times["decoupled"])
    ratio = gated_median / plain_median
    results = {
        "model": args.model, "batch_size": args.batch_size, "repeats": args.repeats, "threads": args.threads, "seed": 0,
        "plain_step_seconds_median": plain_median, "decoupled_step_seconds_median": gated_median,
        "overhead_ratio": ratio, "times": times, "gated_layers": len(decoupled.gated_units),
    }
    table = (f"# Training-step overhead of decoupling ({args.model}, batch {args.batch_size}, {args.threads} threads)\n\n"
             "| step | median seconds |\n|---|---|\n"
             f"| plain | {plain_median:.3f} |\n| decoupled (gates + CE + L_mi + L_kl + L_s) | {gated_median:.3f} |\n\n"
             f"Overhead: {100 * (ratio - 1):.1f} % (ratio {ratio:.3f}).\n")
    print(table)
    write_results(f"decouple_overhead_{args.model}", results, table)


if __name__ == "__main__":
    main()
