"""The ways one small convolution can run on the CPU, and a per-shape choice between them by timing.

At batch 1 PyTorch's default CPU path for these convolutions is im2col + GEMM in NCHW
(``slow_conv2d``); oneDNN's direct convolution in channels-last layout is faster for some shapes
(measured here: a 16→16 stride-2 3×3 conv on 32×32, 70 → 29 µs) and slower for others (4→16 on
32×32, 28 → 55 µs); oneDNN with weights packed ahead of time into its own blocked layout saves the
reorder on every call. No fixed rule picks right across the shapes a decoupled network produces, so
the candidates are timed once per shape met (as cuDNN's benchmark mode does on GPUs) and the fastest
is kept. The choice is kept in one table for the process, keyed by the shapes, geometry, candidates
and thread count, so every executed network meeting a shape (an executor, its per-path static copies,
the dense network through the executor) runs it with the same kernel: one noisy timing under load
then affects them alike instead of making their comparison a comparison of kernel choices (measured
on a ResNet-56 with both cores busy: per-unit choices made the executor 22 % slower than its static
copies, shared choices 3 %).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _nchw(weight: torch.Tensor, bias: torch.Tensor, geometry: dict, input_shape) -> Callable:
    def run(unit_input: torch.Tensor) -> torch.Tensor:
        return F.conv2d(unit_input.contiguous(), weight, bias, **geometry)
    return run


def _channels_last(weight: torch.Tensor, bias: torch.Tensor, geometry: dict, input_shape) -> Callable:
    weight = weight.contiguous(memory_format=torch.channels_last)

    def run(unit_input: torch.Tensor) -> torch.Tensor:
        return F.conv2d(unit_input.contiguous(memory_format=torch.channels_last), weight, bias, **geometry)
    return run


def _packed(weight: torch.Tensor, bias: torch.Tensor, geometry: dict, input_shape) -> Callable:
    """oneDNN with the weight reordered once into its blocked layout for this input shape (what
    torch.compile's CPU freezing does); ``torch.ops.mkldnn._convolution_pointwise`` runs it."""
    stride, padding, dilation, groups = (list(geometry["stride"]), geometry["padding"], list(geometry["dilation"]),
                                         geometry["groups"])
    if isinstance(padding, str):
        raise ValueError("string padding")
    padding = list(padding)
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), padding, stride, dilation, groups,
                                                       list(input_shape))
    operator = torch.ops.mkldnn._convolution_pointwise

    def run(unit_input: torch.Tensor) -> torch.Tensor:
        return operator(unit_input, packed, bias, padding, stride, dilation, groups, "none", [], "")
    return run


#: The candidate implementations, by name: the single list of names ``kernels=`` accepts.
KERNELS: dict[str, Callable] = {"nchw": _nchw, "channels_last": _channels_last, "packed": _packed}
# The default leaves "packed" out: chosen per shape in isolation it often won, but the ResNet-20 executor ran
# slower with it in the choice than without (benchmarks/engine: 1738 vs 1641 µs per image).
DEFAULT_KERNELS = ("nchw", "channels_last")


_CHOSEN: dict[tuple, str] = {}  # the process's kernel choices, see the module docstring


def chosen_kernel(names: tuple[str, ...], unit_input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  geometry: dict) -> tuple[str, Callable]:
    """The kernel for this convolution from the process's table, timed with :func:`fastest_kernel` the first
    time its shapes are met."""
    key = (names, tuple(weight.shape), tuple(unit_input.shape), unit_input.stride(), str(unit_input.dtype),
           tuple(sorted((k, str(v)) for k, v in geometry.items())), torch.get_num_threads())
    name = _CHOSEN.get(key)
    if name is not None:
        return name, KERNELS[name](weight, bias, geometry, tuple(unit_input.shape))
    name, run = fastest_kernel(names, unit_input, weight, bias, geometry)
    _CHOSEN[key] = name
    return name, run


def fastest_kernel(names: tuple[str, ...], unit_input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   geometry: dict, rounds: int = 5, calls: int = 4) -> tuple[str, Callable]:
    """The fastest of the kernels ``names`` on this input shape: best of ``rounds`` timings of ``calls`` calls.

    A kernel that fails to build or run for this shape (e.g. oneDNN's packed form for string padding)
    is left out; ``nchw`` always works.
    """
    built: dict[str, Callable] = {}
    for name in names:
        try:
            run = KERNELS[name](weight, bias, geometry, tuple(unit_input.shape))
            run(unit_input)
        except (RuntimeError, ValueError):
            continue
        built[name] = run
    if len(built) <= 1:
        return next(iter(built.items())) if built else ("nchw", _nchw(weight, bias, geometry, None))
    best: dict[str, float] = {name: float("inf") for name in built}
    for _ in range(rounds):
        for name, run in built.items():  # interleaved, so a burst of load hits every candidate alike
            start = time.perf_counter()
            for _ in range(calls):
                run(unit_input)
            best[name] = min(best[name], time.perf_counter() - start)
    name = min(best, key=best.get)
    return name, built[name]
