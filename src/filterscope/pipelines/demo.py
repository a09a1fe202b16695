"""``filterscope demo``: every analysis end to end into one run directory, then its report.

On the embedded digits (the default) it trains the small CNN, decouples it, records the paths, runs
each analysis (path embedding and tree, occlusion and dissection, adversarial detection, semantic
pruning, influential features, the engine's latency) and writes ``report.html``, in about two minutes
on two CPU cores. Given ``model``/``weights``/``data`` it runs the same pipeline on the user's own
network: a decoupled checkpoint skips training and decoupling, a plain one skips training. The slow
steps take samples of the data whose sizes :func:`sizes_for` sets (smaller with ``quick``).

Layout of the run directory: the dense training run at its top (``checkpoints/last.pt``, or
``dense.pt`` when a decoupled checkpoint was given), the decoupling run in ``decoupled/``, every
analysis's numbers in ``metrics.json`` and figures in ``figures/``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

from ..core.errors import UserInputError
from ..io.environment import record_environment
from ..io.run_dir import RunDir
from .demo_state import DemoOptions, DemoState, is_decoupled
from .demo_steps import STEPS

__all__ = ["DemoOptions", "run_demo"]


def run_demo(options: DemoOptions | None = None, **overrides: Any) -> dict[str, Any]:
    """Run every step into ``options.run_dir`` and build its report.

    A step an analysis cannot do on the given network (a model without gateable units, a data set too small
    for a sample) is recorded as skipped with its reason; the other steps go on.

    Returns:
        ``{"steps": {name: one-line result}, "seconds": {name: s}, "report": path, ...}``, also stored as
        ``metrics.json["demo"]``.
    """
    from ..report.html import build_report

    options = options or DemoOptions(**overrides)
    if is_decoupled(options.weights):  # its architecture is the one it was decoupled from
        options = replace(options, model=_model_of(options.weights) or options.model)
    state = DemoState(options, RunDir(options.run_dir))
    state.run.write_config({"verb": "demo", **asdict(options)}, name="demo.yaml")
    started = time.perf_counter()
    steps = [(name, step) for name, step in STEPS if name in ("train", "decouple") or _wanted(state, name)]
    for number, (name, step) in enumerate(steps, 1):
        if options.progress:
            print(f"[{number}/{len(steps)}] {name}", flush=True)
        step_start = time.perf_counter()
        try:
            if _needs_gates(name) and state.decoupled_weights is None:
                raise UserInputError(f"it reads the decoupled model, and decoupling did not run ({state.results['decouple']})")
            state.results[name] = step(state)
        except UserInputError as error:
            if name == "train":  # nothing to analyse without the network
                raise
            state.results[name] = f"skipped: {error}"
        state.seconds[name] = round(time.perf_counter() - step_start, 1)
    summary = _summary(state, time.perf_counter() - started)
    state.run.update_metrics("demo", summary)
    record_environment(state.run.path, "demo")
    summary["report"] = str(build_report(state.run.path))
    return summary


def _needs_gates(name: str) -> bool:
    """Every step after decoupling reads the decoupled model except the per-class ones, which read the dense network."""
    return name not in ("train", "decouple", "semantic pruning", "influence")


def _wanted(state: DemoState, name: str) -> bool:
    """Without decoupling (--decouple-epochs 0 and a plain checkpoint) the steps that need gates are left out."""
    return not _needs_gates(name) or state.options.decouple_epochs > 0 or is_decoupled(state.options.weights)


def _model_of(weights: str) -> str | None:
    from ..models.checkpoint import read_checkpoint

    return read_checkpoint(weights).get("model_name")


def _summary(state: DemoState, seconds: float) -> dict[str, Any]:
    from ..core.flops import count_costs
    from ..core.units import find_units
    from ..models import create_model, model_spec

    options = state.options
    spec = model_spec(options.model)
    network = create_model(options.model)
    units = find_units(network, spec.input_shape)
    costs = count_costs(network, spec.input_shape, units)
    return {"model": options.model, "data": str(options.data), "weights": options.weights, "quick": options.quick,
            "conv_units": len(units), "flops_per_image": costs.total_flops, "parameters": costs.total_params,
            "dense_weights": state.dense_weights, "decoupled_weights": state.decoupled_weights,
            "steps": state.results, "step_seconds": state.seconds, "seconds": round(seconds, 1),
            "run_dir": str(state.run.path)}
