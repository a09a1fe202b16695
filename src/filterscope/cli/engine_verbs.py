"""The verb that times the executor: ``filterscope bench``."""

from __future__ import annotations

import json

from ..core.errors import UserInputError
from .arguments import DefaultsShown, add_execution_arguments, add_run_dir_arguments, finish, prepare


def add_bench_parser(verbs) -> None:
    from ..pipelines.bench import ROUTES

    parser = verbs.add_parser("bench", help="time a decoupled checkpoint through the executor beside its dense and "
                              "masked forms (batch-1 latency, batch throughput, accuracy, FLOPs)", formatter_class=DefaultsShown)
    parser.add_argument("--weights", required=True, help="decoupled checkpoint (from `filterscope decouple`)")
    parser.add_argument("--data", required=True, help="data set the checkpoint was trained on (test split timed, "
                        "training split calibrates the executor)")
    parser.add_argument("--dense-weights", help="dense checkpoint whose accuracy the dense rows report")
    parser.add_argument("--pruned", help="statically pruned checkpoint to time beside (e.g. Torch-Pruning at equal FLOPs)")
    parser.add_argument("--inputs", type=int, default=200, help="test images timed at batch 1, each on its own path")
    parser.add_argument("--repeats", type=int, default=30, help="timed passes over the inputs (median reported)")
    parser.add_argument("--calibration", type=int, default=5000, help="training images the executor is calibrated on")
    parser.add_argument("--throughput-threads", type=int, default=2, help="threads for the batch throughput rows")
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES),
                        help="routes (convolution kernels, flattening, gate kernel) timed as extra rows")
    add_run_dir_arguments(parser)
    add_execution_arguments(parser, batch_size=64)
    parser.set_defaults(threads=1)


def run_bench(args) -> int:
    from ..pipelines.bench import BenchOptions

    for flag in ("inputs", "repeats", "calibration", "throughput_threads"):
        if getattr(args, flag) < 1:
            raise UserInputError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}.")
    if args.device != "cpu":
        raise UserInputError("bench times the CPU executor; pass --device cpu.")
    prepare(args, analysis="bench")
    for path, flag in ((args.dense_weights, "--dense-weights"), (args.pruned, "--pruned")):
        if path:
            from ..models.checkpoint import check_checkpoint_exists

            check_checkpoint_exists(path, flag)
    from ..pipelines.bench import bench_table, run_bench as measure

    options = BenchOptions(weights=args.weights, data=args.data, dense_weights=args.dense_weights, pruned=args.pruned,
                           inputs=args.inputs, repeats=args.repeats, threads=args.threads, batch_size=args.batch_size,
                           throughput_threads=args.throughput_threads, calibration=args.calibration,
                           routes=tuple(args.routes), progress=not args.quiet)
    result = measure(options)
    table = bench_table(result)
    if args.run_dir is not None:
        from ..io.run_dir import RunDir, write_text_atomically

        run = RunDir(args.run_dir)
        run.update_metrics("bench", result)
        write_text_atomically(run.path / "bench.md", table)
    print(json.dumps(result) if args.json else table)
    finish(args.run_dir, args.verb)
    return 0
