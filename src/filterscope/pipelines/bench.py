"""``filterscope bench``: how fast a decoupled model really runs, beside dense and statically pruned ones.

Rows, each timed in one run side by side (see :mod:`filterscope.engine.latency`), with accuracy and FLOPs:

- ``dense``: the dense network as PyTorch runs it (``model.eval()``); ``dense executor``: the same
  network through the executor with no gates (BatchNorm folded, same kernels), the fairer reference;
- ``decoupled (masked)``: the decoupled model as trained, every filter computed and closed ones zeroed;
- ``executor``: :func:`~filterscope.engine.compile_decoupled`, calibrated on training images;
- ``static per path``: for each input, a copy with exactly its open filters and no gates (the ceiling);
- ``pruned`` / ``pruned executor``: a statically pruned network (e.g. Torch-Pruning at equal FLOPs), if given.

The speedup reported is against the faster of the two dense rows. Routes (which convolution
kernels the executor may choose from, whether it is flattened, how its gates run) are timed as extra pairs of
rows, each with its own dense reference.
"""

from __future__ import annotations

import copy
import os
import platform
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..analyses.evaluate import evaluate
from ..core.flops import count_flops_reference
from ..core.threads import use_threads
from ..data import load_dataset
from ..engine import compile_decoupled, compile_network
from ..engine.latency import time_latency, time_throughput
from ..methods.decoupling import load_decoupled
from ..models import load_weights
from ..models.pruned import load_pruned
from ..models.registry import create_model, model_spec

#: Routes: the executor's compile options per name (the kernels each conv chooses from per shape, whether
#: the network is flattened into one fx forward, see :mod:`filterscope.engine.flattening`, and how the gates
#: are evaluated, see :mod:`filterscope.engine.gate_program`). "flat" is what compile_decoupled does by
#: default (its gates compiled where a C compiler works); the first four keep the network's own module calls.
ROUTES = {"stock": {"kernels": ("nchw",), "flatten": False},
          "channels-last": {"kernels": ("nchw", "channels_last"), "flatten": False},
          "packed": {"kernels": ("nchw", "packed"), "flatten": False},
          "all": {"kernels": ("nchw", "channels_last", "packed"), "flatten": False},
          "flat-stock": {"kernels": ("nchw",), "flatten": True},
          "flat-torch-gates": {"kernels": ("nchw", "channels_last"), "flatten": True, "gates": "torch"},
          "flat": {"kernels": ("nchw", "channels_last"), "flatten": True}}


@dataclass
class BenchOptions:
    """What ``filterscope bench`` measures (see the module docstring)."""

    weights: str  # the decoupled checkpoint
    data: str
    dense_weights: str | None = None  # the dense model whose accuracy the dense rows report
    pruned: str | None = None  # a statically pruned checkpoint (models.pruned format)
    inputs: int = 200  # test images timed at batch 1, each on its own path
    repeats: int = 30
    threads: int = 1  # latency threads
    batch_size: int = 64
    throughput_threads: int = 2
    throughput_batches: int = 8
    throughput_repeats: int = 10
    calibration: int = 5000  # training images the executor is calibrated on
    eval_images: int | None = None  # test images the accuracy and mean FLOPs are measured on, evenly spaced (None: all)
    routes: tuple[str, ...] = tuple(ROUTES)
    progress: bool = True
    extra: dict = field(default_factory=dict)


def run_bench(options: BenchOptions) -> dict:
    """Measure every row; the result dict (``rows``, ``routes``, ``throughput``, the settings and the machine)."""
    load_at_start = os.getloadavg()
    decoupled = load_decoupled(options.weights)
    dense = create_model(decoupled.model_name, decoupled.num_classes)  # every checkpoint is read before the data
    if options.dense_weights:
        load_weights(dense, options.dense_weights)
    pruned = load_pruned(options.pruned) if options.pruned else None
    name = decoupled.model_name
    spec = model_spec(name)
    test = load_dataset(options.data, "test", mean=spec.mean, std=spec.std, expected_image_shape=spec.input_shape)
    train = load_dataset(options.data, "train", mean=spec.mean, std=spec.std, expected_image_shape=spec.input_shape)
    models = _models(decoupled, dense, pruned, train, options)
    rows = _accuracy_and_flops(models, decoupled, test, options)
    inputs = _spread(test, options.inputs)
    use_threads(options.threads)
    latency = _latency(models, decoupled, inputs, options)
    for row in rows:
        row.update({"latency_us": latency[row["name"]]})
    dense_best = min(latency["dense"]["median"], latency["dense executor"]["median"])
    for row in rows:
        row["speedup"] = dense_best / row["latency_us"]["median"]
        row["flops_reduction"] = rows[0]["flops"] / row["flops"] if row.get("flops") else None
    routes = {route: {"executor_us": latency[f"executor [{route}]"], "dense_us": latency[f"dense executor [{route}]"],
                      "gate_kernels": models[f"executor [{route}]"].gate_kernels()} for route in options.routes}
    use_threads(options.throughput_threads)
    throughput = _throughput(models, test, options)
    return {"model": name, "checkpoint": options.weights, "gate_kernels": models["executor"].gate_kernels(),
            "rows": rows, "routes": routes, "throughput": throughput,
            "settings": {k: v for k, v in asdict(options).items() if k != "extra"}, "torch": torch.__version__,
            "platform": platform.platform(), "load_average_start": load_at_start, "load_average_end": os.getloadavg(),
            **options.extra}


def _models(decoupled, dense, pruned, train, options: BenchOptions) -> dict:
    calibration = torch.stack([train[i][0] for i in _indices(len(train), options.calibration)])
    models = {"decoupled (masked)": decoupled, "executor": compile_decoupled(decoupled, calibration),
              "dense executor": compile_network(decoupled)}
    models["dense"] = dense.eval()
    for route in options.routes:
        models[f"executor [{route}]"] = compile_decoupled(decoupled, calibration, **ROUTES[route])
        network_options = {key: value for key, value in ROUTES[route].items() if key != "gates"}  # no gates there
        models[f"dense executor [{route}]"] = compile_network(decoupled, **network_options)
    if pruned is not None:
        models["pruned"] = pruned
        models["pruned executor"] = compile_network(pruned, decoupled.input_shape)
    return models


def _indices(length: int, count: int) -> list[int]:
    count = min(count, length)
    return [round(i * length / count) for i in range(count)]


def _spread(dataset, count: int) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in _indices(len(dataset), count)])


def _accuracy_and_flops(models: dict, decoupled, test, options: BenchOptions) -> list[dict]:
    if options.eval_images is not None:
        test = Subset(test, _indices(len(test), options.eval_images))
    loader = DataLoader(test, batch_size=256)
    dense_flops = count_flops_reference(models["dense"], decoupled.input_shape)
    per_input = []
    masked = evaluate(decoupled, loader, decoupled.num_classes, progress=options.progress, description="masked",
                      observe=lambda labels, logits: per_input.append(decoupled.cost_model.per_input(decoupled.last_gates())))
    decoupled_flops = float(torch.cat(per_input).mean())
    executed = evaluate(models["executor"], loader, decoupled.num_classes, progress=options.progress, description="executor")
    rows = [
        {"name": "dense", "flops": dense_flops,
         "accuracy": evaluate(models["dense"], loader, decoupled.num_classes, progress=False).accuracy
         if options.dense_weights else None},
        {"name": "dense executor", "flops": dense_flops, "accuracy": None},
        {"name": "decoupled (masked)", "flops": decoupled_flops, "accuracy": masked.accuracy},
        {"name": "executor", "flops": decoupled_flops, "accuracy": executed.accuracy},
        {"name": "static per path", "flops": decoupled_flops, "accuracy": masked.accuracy},
    ]
    if "pruned" in models:
        pruned_flops = count_flops_reference(models["pruned"], decoupled.input_shape)
        accuracy = evaluate(models["pruned"], loader, decoupled.num_classes, progress=False).accuracy
        rows += [{"name": "pruned", "flops": pruned_flops, "accuracy": accuracy},
                 {"name": "pruned executor", "flops": pruned_flops, "accuracy": accuracy}]
    return rows


def per_path_copies(decoupled, executor, inputs: torch.Tensor) -> list:
    """Per input, ``executor`` specialised to that input's own path (one copy shared by the inputs on the same path)."""
    with torch.no_grad():
        decoupled(inputs)
    gates = decoupled.last_gates()
    copies: dict[bytes, object] = {}
    static = []
    for index in range(inputs.shape[0]):
        path = [layer[index] for layer in gates]
        key = torch.cat(path).gt(0.5).numpy().tobytes()
        if key not in copies:
            copies[key] = executor.specialized(path)
        static.append(copies[key])
    return static


def _latency(models: dict, decoupled, inputs: torch.Tensor, options: BenchOptions) -> dict:
    """Batch-1 latency of every model, the per-path static copies built from each input's own gates."""
    static = per_path_copies(decoupled, models["executor"], inputs)
    runs = {name: (lambda i, m=model: m(inputs[i:i + 1])) for name, model in models.items()}
    runs["static per path"] = lambda i: static[i](inputs[i:i + 1])
    bar = tqdm(total=options.repeats, desc="latency", disable=not options.progress, leave=False)
    try:
        return time_latency(runs, inputs.shape[0], repeats=options.repeats, progress=bar.update)
    finally:
        bar.close()


def _throughput(models: dict, test, options: BenchOptions) -> dict:
    size = options.batch_size  # a small test split is reused from its start
    batches = [torch.stack([test[i % len(test)][0] for i in range(b * size, (b + 1) * size)])
               for b in range(options.throughput_batches)]
    union = models["executor"]
    runs = {"dense": models["dense"], "dense executor": models["dense executor"],
            "decoupled (masked)": models["decoupled (masked)"], "executor (union)": union}
    runs["executor (mask)"] = copy.deepcopy(union)
    runs["executor (mask)"].set_batch_mode("mask")
    if "pruned" in models:
        runs["pruned"], runs["pruned executor"] = models["pruned"], models["pruned executor"]
    return time_throughput({k: (lambda batch, m=m: m(batch)) for k, m in runs.items()}, batches,
                           repeats=options.throughput_repeats)


def bench_table(result: dict) -> str:
    """The result as markdown: one row per model (latency, speedup, FLOPs, accuracy), the routes and
    the batch throughput."""
    lines = ["| model | top-1 | FLOPs (M) | FLOPs reduction | batch-1 latency (µs, median [p10, p90]) | speedup vs faster dense |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        latency = row["latency_us"]
        accuracy = "—" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        lines.append(f"| {row['name']} | {accuracy} | {row['flops'] / 1e6:.1f} | {row['flops_reduction']:.2f}× | "
                     f"{latency['median']:.0f} [{latency['p10']:.0f}, {latency['p90']:.0f}] | {row['speedup']:.2f}× |")
    gates = ", ".join(result.get("gate_kernels", [])) or "none evaluated"
    lines += ["", f"Gates of the executor row: {gates}.", "",
              "| route | gates | dense executor (µs) | executor (µs) | ratio |", "|---|---|---|---|---|"]
    for route, times in result["routes"].items():
        dense, executed = times["dense_us"]["median"], times["executor_us"]["median"]
        route_gates = ", ".join(times.get("gate_kernels", [])) or "—"
        lines.append(f"| {route} | {route_gates} | {dense:.0f} | {executed:.0f} | {dense / executed:.2f}× |")
    settings = result["settings"]
    dense = result["throughput"]["dense"]["median"]
    lines += ["", f"| batch {settings['batch_size']}, {settings['throughput_threads']} threads | images/s | vs dense |",
              "|---|---|---|"]
    for name, value in result["throughput"].items():
        lines.append(f"| {name} | {value['median']:.0f} | {value['median'] / dense:.2f}× |")
    return "\n".join(lines) + "\n"
