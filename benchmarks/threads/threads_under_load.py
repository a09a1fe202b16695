"""Intra-op threads for small CIFAR models on a busy 2-core machine: 1 against 2, side by side.

Times forward passes of ResNet-20 (evaluation, batch 256) and training steps (batch 128) with
torch.set_num_threads(1) and (2), interleaved A-B-B-A so that both settings share the machine's
load, and writes results/threads_<model>.json with the machine, versions and the ratio.

    python benchmarks/threads/threads_under_load.py --model resnet20 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import filterscope as fs


def timed(step, threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    step()  # warm-up at this thread count
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-note", default="", help="what else ran on the machine (recorded)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = fs.create_model(args.model, 10)
    images_eval, images_train = torch.randn(256, 3, 32, 32), torch.randn(128, 3, 32, 32)
    labels = torch.randint(0, 10, (128,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def evaluate_batch():
        model.eval()
        with torch.no_grad():
            model(images_eval)

    def train_step():
        model.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images_train), labels).backward()
        optimizer.step()

    results = {}
    for name, step in (("eval_batch256", evaluate_batch), ("train_step_batch128", train_step)):
        times = {1: [], 2: []}
        for round_index in range(args.rounds):
            order = (1, 2) if round_index % 2 == 0 else (2, 1)
            for threads in order:
                times[threads].append(timed(step, threads, args.repeats))
        median = {t: statistics.median(v) for t, v in times.items()}
        results[name] = {"seconds_1_thread": times[1], "seconds_2_threads": times[2],
                         "median_1": median[1], "median_2": median[2], "speedup_2_over_1": median[1] / median[2]}
        print(f"{name}: 1 thread {median[1] * 1000:.1f} ms, 2 threads {median[2] * 1000:.1f} ms, "
              f"2 over 1: {median[1] / median[2]:.2f}x")
    out = Path(__file__).parent / "results" / f"threads_{args.model}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "threads_under_load", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "load_note": args.load_note, "load_average_at_end": os.getloadavg(), "seed": 0, "results": results,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
