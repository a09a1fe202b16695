"""Timing models side by side: batch-1 latency over many inputs, and batch throughput.

Every model is timed in the same loop, in an order that rotates from one repeat to the next, so a
burst of load from elsewhere on the machine falls on all of them alike; results are medians over the
repeats, and comparisons are taken as ratios of medians measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _summary(per_repeat: list[float]) -> dict:
    ordered = sorted(per_repeat)
    return {"median": statistics.median(ordered), "p10": ordered[len(ordered) // 10],
            "p90": ordered[min(len(ordered) - 1, (9 * len(ordered)) // 10)], "repeats": len(ordered)}


@torch.no_grad()
def time_latency(models: dict[str, Callable[[int], object]], count: int, *, repeats: int = 30,
                 progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """Per model, the time of one input at batch 1 in microseconds: one repeat runs ``model(i)`` for every
    input index ``i`` < ``count`` in turn and divides its time by ``count``; median, p10 and p90 over
    ``repeats`` after one untimed warm-up pass (which fills every cache and kernel choice)."""
    for run in models.values():
        for index in range(count):
            run(index)
    def one_pass(run) -> float:
        start = time.perf_counter()
        for index in range(count):
            run(index)
        return (time.perf_counter() - start) / count * 1e6

    return _rotating_repeats(models, repeats, one_pass, progress)


@torch.no_grad()
def time_throughput(models: dict[str, Callable[[torch.Tensor], object]], batches: list[torch.Tensor], *,
                    repeats: int = 10) -> dict[str, dict]:
    """Per model, images per second over ``batches`` (median, p10, p90 over ``repeats`` after a warm-up pass)."""
    images = sum(batch.shape[0] for batch in batches)
    for run in models.values():
        for batch in batches:
            run(batch)
    def one_pass(run) -> float:
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        return images / (time.perf_counter() - start)

    return _rotating_repeats(models, repeats, one_pass, None)


def _rotating_repeats(models: dict, repeats: int, one_pass: Callable, progress: Callable[[int], None] | None) -> dict:
    """``one_pass(model)`` for every model in each repeat, in an order that rotates between repeats; summaries."""
    names = list(models)
    per_repeat: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            per_repeat[name].append(one_pass(models[name]))
        if progress is not None:
            progress(1)
    return {name: _summary(values) for name, values in per_repeat.items()}
