"""``filterscope <verb>``: thin verbs over the public API.

Each verb parses its flags, calls one API function and writes or prints its result. Bad input
ends with one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..core.errors import UserInputError


def _add_model_arguments(parser, *, weights_help: str | None = "checkpoint path") -> None:
    """--model (a built-in model name) and, unless ``weights_help`` is None, --weights."""
    from ..models import MODELS

    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    if weights_help is not None:
        parser.add_argument("--weights", help=weights_help)


def _add_data_arguments(parser, *, split_default: str = "test", split_help: str | None = None, eval_split: bool = False) -> None:
    """The data flags the analysis verbs share: --data, --split (and --eval-split), --val-fraction."""
    from ..data import SPLITS

    parser.add_argument("--data", required=True, help="registered data set name, or a folder or .zip of split/class/image files")
    parser.add_argument("--split", default=split_default, choices=SPLITS, help=split_help)
    if eval_split:
        parser.add_argument("--eval-split", default="test", choices=SPLITS)
    parser.add_argument("--val-fraction", type=float, default=0.0)


def _add_execution_arguments(parser, *, threads: bool = False) -> None:
    """The flags for how an analysis verb runs and prints: --batch-size, --device (--threads), --json."""
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_analysis_arguments(parser, *, split_help: str) -> None:
    """The flags of the per-class analysis verbs (influence, semantic-prune): the statistics come
    from --split, the evaluation from --eval-split, and --run-dir also writes a run directory."""
    _add_data_arguments(parser, split_default="train", split_help=split_help, eval_split=True)
    parser.add_argument("--run-dir", default=None, help="also write metrics, arrays and figures into this run directory")
    _add_execution_arguments(parser, threads=True)


def _write_verb_config(args) -> None:
    """Record the verb's flags as the run directory's config.yaml, unless the directory already has one."""
    from ..io.run_dir import RunDir

    if args.run_dir is not None and not (RunDir(args.run_dir).path / "config.yaml").exists():
        RunDir(args.run_dir).write_config({"verb": args.verb, **{k: v for k, v in vars(args).items() if k != "verb"}})


def _add_train_parser(verbs) -> None:
    from ..core.config import add_dataclass_arguments
    from ..training.train import TrainConfig

    parser = verbs.add_parser("train", help="train or fine-tune a model; writes a run directory")
    parser.add_argument("--config", help="YAML file of options (flags override it)")
    add_dataclass_arguments(parser, TrainConfig)


def _run_train(args) -> int:
    from ..core.config import read_yaml_config, resolve_config
    from ..training.train import TrainConfig, train

    config = resolve_config(TrainConfig, args, read_yaml_config(args.config))
    result = train(config)
    from ..core import distributed

    if distributed.is_main_process():
        print(json.dumps({"run_dir": str(result.run_dir), "accuracy": result.final["accuracy"], "split": config.eval_split}))
    distributed.shutdown()
    return 0


# The options `filterscope decouple --help` lists; every other field of TrainConfig, DecoupleConfig and
# DecouplingRunOptions is set with --set NAME=VALUE or in a --config file (docs/decoupling-options.md).
DECOUPLE_FLAGS = (
    "model", "data", "weights", "epochs", "batch_size", "lr", "device", "threads", "run_dir", "resume", "progress",
    "preset", "lambda_mi", "lambda_kl", "lambda_sparsity", "sparsity_ratio", "sparsity_form",
    "teacher_weights", "flops_target", "recalibrate_bn_images",
)


def _add_decouple_parser(verbs) -> None:
    import dataclasses

    from ..core.config import add_dataclass_arguments
    from ..methods.decoupling import DecoupleConfig
    from ..pipelines.decoupling import DecouplingRunOptions
    from ..pipelines.recipes import RECIPES
    from ..training.train import TrainConfig

    parser = verbs.add_parser(
        "decouple", help="decouple a pretrained model: gates + L_mi, L_kl, L_s, trained with the common loop",
        description="The main options are flags; every other option (see docs/decoupling-options.md) is set with "
                    "--set NAME=VALUE or in a --config file.",
    )
    parser.add_argument("--config", help="YAML file of options, flat or in sections train/decouple/options, or the name of "
                        f"a bundled recipe ({', '.join(RECIPES)}); --set and flags override it")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="NAME=VALUE",
                        help="any option of the config file, VALUE read as YAML (e.g. --set sparsity_on=evaluation "
                             "--set 'include=[layer*.conv1]'); repeatable; flags override it")
    for options in (TrainConfig, DecoupleConfig, DecouplingRunOptions):
        add_dataclass_arguments(parser, options, skip=tuple(f.name for f in dataclasses.fields(options)
                                                            if f.name not in DECOUPLE_FLAGS))
    parser.add_argument("--include", dest="include", nargs="*", default=argparse.SUPPRESS, help="unit name patterns to gate")
    parser.add_argument("--exclude", dest="exclude", nargs="*", default=argparse.SUPPRESS, help="unit name patterns not to gate")


def _decouple_file_values(args) -> dict:
    """The --config file's values (flat, under today's option names) with the --set values over them."""
    import yaml

    from ..methods.decoupling.legacy import upgrade_settings
    from ..pipelines.recipes import config_values

    values = config_values(args.config)
    for assignment in args.set_options:
        name, equals, text = assignment.partition("=")
        if not equals or not name.strip():
            raise UserInputError(f"--set {assignment!r} is not NAME=VALUE; write e.g. --set sparsity_on=evaluation.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserInputError(f"--set {assignment!r}: the value is not valid YAML; quote it, e.g. 'include=[a*]'.") from None
        values.update(upgrade_settings({name.strip(): value}, source=f"--set {assignment}"))
    return values


def _run_decouple(args) -> int:
    from ..core import distributed
    from ..core.config import resolve_configs
    from ..methods.decoupling import DecoupleConfig
    from ..pipelines.decoupling import DecouplingRunOptions, run_decoupling
    from ..training.train import TrainConfig

    train_config, decouple_config, options = resolve_configs(
        (TrainConfig, DecoupleConfig, DecouplingRunOptions), args, _decouple_file_values(args)
    )
    summary = run_decoupling(train_config, decouple_config, options)
    if distributed.is_main_process():
        keys = ("accuracy", "mean_flops", "dense_flops", "flops_reduction", "energetic_fraction", "silent_fraction", "dynamic_fraction")
        print(json.dumps({"run_dir": train_config.run_dir, **{k: summary[k] for k in keys}}))
    distributed.shutdown()
    return 0


def _add_eval_parser(verbs) -> None:
    parser = verbs.add_parser("eval", help="evaluate a checkpoint on a data split")
    _add_model_arguments(parser, weights_help="checkpoint path (omit to evaluate fresh weights)")
    _add_data_arguments(parser)
    _add_execution_arguments(parser)


def _run_eval(args) -> int:
    from ..analyses.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.model, args.weights, args.data, split=args.split, batch_size=args.batch_size,
        device=args.device, val_fraction=args.val_fraction, progress=not args.json,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} on {args.data} [{args.split}]: top-1 {result['accuracy']:.4f}, loss {result['loss']:.4f}, {result['num_samples']} images")
        for name, accuracy in zip(result["classes"], result["per_class_accuracy"]):
            print(f"  {name:>12s} {accuracy:.4f}")
    return 0


def _add_paths_parser(verbs) -> None:
    parser = verbs.add_parser(
        "paths", help="calculation paths and filter states of a decoupled model over a data split; written into its run directory"
    )
    parser.add_argument("checkpoint", help="a `filterscope decouple` run directory or a decoupled checkpoint file")
    _add_data_arguments(parser)
    parser.add_argument("--run-dir", help="where to write (default: the run directory of the checkpoint)")
    parser.add_argument("--no-save-paths", dest="save_paths", action="store_false",
                        help="write filter states and figures only, not the bit-packed paths")
    _add_execution_arguments(parser)


def _run_paths(args) -> int:
    from ..pipelines.paths import record_checkpoint_paths

    summary = record_checkpoint_paths(
        args.checkpoint, args.data, split=args.split, run_dir=args.run_dir, batch_size=args.batch_size,
        device=args.device, val_fraction=args.val_fraction, save_paths=args.save_paths, progress=not args.json,
    )
    summary.pop("per_layer")
    summary.pop("active_fraction_per_layer")
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.split}: top-1 {summary['accuracy']:.4f} over {summary['num_samples']} images, "
              f"{summary['mean_flops'] / 1e6:.2f} M FLOPs per image (reduction {summary['flops_reduction']:.2f}x), "
              f"filters {summary['energetic_fraction']:.1%} energetic / {summary['silent_fraction']:.1%} silent / "
              f"{summary['dynamic_fraction']:.1%} dynamic; written to {summary['run_dir']}")
    return 0


def _add_demo_parser(verbs) -> None:
    parser = verbs.add_parser("demo", help="train and evaluate the small CNN on the embedded digits (about a minute)")
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--decouple-epochs", type=int, default=15, help="0 skips the decoupling step")
    parser.add_argument("--seed", type=int, default=0)


def _run_demo(args) -> int:
    from ..pipelines.demo import run_demo
    from ..report.html import build_report

    summary = run_demo(args.run_dir, epochs=args.epochs, decouple_epochs=args.decouple_epochs, seed=args.seed)
    print(f"demo: digits_cnn on digits, test top-1 {summary['test_accuracy']:.4f} after {summary['epochs']} epochs")
    print(f"      {summary['conv_units']} conv units, {summary['flops_per_image']:,} FLOPs per image, {summary['parameters']:,} parameters")
    if "decouple" in summary:
        d = summary["decouple"]
        print(f"decoupled: top-1 {d['accuracy']:.4f}, {d['mean_flops']:,.0f} FLOPs per image ({d['flops_reduction']:.2f}x fewer), "
              f"filters {100 * d['energetic_fraction']:.0f}% energetic / {100 * d['silent_fraction']:.0f}% silent / "
              f"{100 * d['dynamic_fraction']:.0f}% dynamic")
    print(f"      run directory: {summary['run_dir']}")
    for folder in [summary["run_dir"]] + ([summary["decouple"]["run_dir"]] if "decouple" in summary else []):
        print(f"      report: {build_report(folder)}")
    return 0


def _add_units_parser(verbs) -> None:
    parser = verbs.add_parser("units", help="list a model's conv units with their FLOPs and parameters")
    _add_model_arguments(parser, weights_help=None)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--json", action="store_true")


def _run_units(args) -> int:
    from ..core.flops import count_costs
    from ..models import create_model, model_spec
    from ..core.units import describe_units, find_units

    spec = model_spec(args.model)
    model = create_model(args.model, args.num_classes)
    units = find_units(model, spec.input_shape)
    costs = count_costs(model, spec.input_shape, units)
    if args.json:
        print(json.dumps(costs.to_dict()))
    else:
        print(describe_units(units))
        print(f"total: {costs.total_flops:,} FLOPs per image, {costs.total_params:,} parameters")
    return 0


def _add_report_parser(verbs) -> None:
    parser = verbs.add_parser("report", help="write report.html of a run directory from its metrics, figures and config")
    parser.add_argument("run_dir", help="a folder a filterscope verb wrote (its --run-dir)")


def _run_report(args) -> int:
    from ..report.html import build_report

    print(f"report: {build_report(args.run_dir)}")
    return 0


def _add_models_parser(verbs) -> None:
    verbs.add_parser("models", help="list the built-in models")


def _run_models(args) -> int:
    from ..models import MODELS

    for name in sorted(MODELS):
        spec = MODELS[name]
        print(f"{name:16s} input {'x'.join(map(str, spec.input_shape)):8s} {spec.description}")
    return 0


def _add_influence_parser(verbs) -> None:
    from ..methods.influence import CRITERIA, LABEL_SOURCES

    parser = verbs.add_parser(
        "influence", help="class-specific influential features (Algorithm 1) and the decomposed final layer"
    )
    _add_model_arguments(parser)
    parser.add_argument("--k1", type=int, default=5, help="features counted per instance (top by l1 norm)")
    parser.add_argument("--k2", type=int, default=5, help="features kept per class")
    parser.add_argument("--criterion", default="l1", choices=sorted(CRITERIA))
    parser.add_argument("--labels", default="true", choices=LABEL_SOURCES, help="group instances by true or predicted class")
    parser.add_argument("--at", default="final", help="'final' (input of the final linear layer) or a unit name")
    _add_analysis_arguments(parser, split_help="split the index sets come from")


def _run_influence(args) -> int:
    import torch

    from ..methods.influence import InfluenceConfig
    from ..pipelines.influence import analyze_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    config = InfluenceConfig(k1=args.k1, k2=args.k2, criterion=args.criterion, labels=args.labels, at=args.at)
    summary = analyze_checkpoint(
        args.model, args.weights, args.data, config, index_split=args.split, eval_split=args.eval_split,
        val_fraction=args.val_fraction, batch_size=args.batch_size, device=args.device, run_dir=args.run_dir,
        progress=not args.json,
    )
    _write_verb_config(args)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.model}: k1={args.k1}, k2={args.k2}, criterion {args.criterion}, index sets from [{args.split}]")
    for name, features in summary["indices"].items():
        print(f"  {name:>12s} {features}")
    if "accuracy_full" in summary:
        print(
            f"[{args.eval_split}] full {summary['accuracy_full']:.4f}, decomposed {summary['accuracy_decomposed']:.4f}, "
            f"r_A {summary['relative_accuracy']:.4f}; final layer {summary['flops_final_full']:,} -> "
            f"{summary['flops_final_decomposed']:,} FLOPs"
        )
    return 0


def _add_semantic_prune_parser(verbs) -> None:
    from ..methods.semantic_pruning import DEFAULT_RATIOS, MODES
    from ..core.capture import WHERE

    parser = verbs.add_parser(
        "semantic-prune", help="prune filters for one class by accumulated response (no retraining) and evaluate"
    )
    _add_model_arguments(parser)
    parser.add_argument("--classes", nargs="+", default=None, help="class names or indices (default: every class)")
    parser.add_argument("--mode", nargs="+", default=list(MODES), choices=MODES, help="nwp (network-wise), lwp (layer-wise)")
    parser.add_argument("--ratios", nargs="+", default=[str(r) for r in DEFAULT_RATIOS],
                        help="ratios θ in [0, 1], '0-score' or 'median'")
    parser.add_argument("--where", default="post", choices=WHERE, help="where filter responses are read")
    parser.add_argument("--exclude", nargs="*", default=[], help="unit names never pruned")
    _add_analysis_arguments(parser, split_help="split the responses come from")
    parser.add_argument("--masks-per-pass", type=int, default=8, help="pruned networks evaluated in one forward pass")


def _run_semantic_prune(args) -> int:
    import torch

    from ..methods.semantic_pruning import SemanticPruningConfig
    from ..pipelines.semantic_pruning import analyze_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    config = SemanticPruningConfig(
        modes=tuple(args.mode), settings=tuple(args.ratios), classes=tuple(args.classes) if args.classes else None,
        where=args.where, exclude=tuple(args.exclude), masks_per_pass=args.masks_per_pass,
    )
    summary = analyze_checkpoint(
        args.model, args.weights, args.data, config, response_split=args.split, eval_split=args.eval_split,
        val_fraction=args.val_fraction, batch_size=args.batch_size, device=args.device, run_dir=args.run_dir,
        progress=not args.json,
    )
    _write_verb_config(args)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.model}: responses [{args.split}] at {args.where}, evaluated on [{args.eval_split}]")
    print(f"  {'class':>12s} {'mode':4s} {'θ':>7s} {'DP':>6s} {'RP':>6s} {'recall':>7s} {'prec.':>7s} {'AUC':>7s} {'acc.':>7s}")
    for row in summary["results"]:
        dead = "  dead: " + ", ".join(row["emptied_units"]) if row["dead"] else ""
        print(f"  {row['class']:>12s} {row['mode']:4s} {str(row['setting']):>7s} {row['fraction_direct']:6.3f} "
              f"{row['fraction_residual']:6.3f} {row['recall']:7.4f} {row['precision']:7.4f} {row['auc']:7.4f} "
              f"{row['accuracy']:7.4f}{dead}")
    return 0


VERBS = {
    "demo": (_add_demo_parser, _run_demo),
    "train": (_add_train_parser, _run_train),
    "decouple": (_add_decouple_parser, _run_decouple),
    "eval": (_add_eval_parser, _run_eval),
    "paths": (_add_paths_parser, _run_paths),
    "units": (_add_units_parser, _run_units),
    "models": (_add_models_parser, _run_models),
    "influence": (_add_influence_parser, _run_influence),
    "semantic-prune": (_add_semantic_prune_parser, _run_semantic_prune),
    "report": (_add_report_parser, _run_report),
}


class OneSentenceParser(argparse.ArgumentParser):
    """argparse prints its whole usage block before a bad flag's message; this prints the message
    alone, with where to look, and exits with code 2 as argparse does."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneSentenceParser(prog="filterscope", description="Which filters does each input, and each class, actually use?")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE",
                        help="a .py file or module that registers your own models or data sets (repeatable; "
                             "allowed anywhere on the line)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for add_parser, _ in VERBS.values():
        add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .plugins import load_plugin, split_plugin_arguments

    try:  # before the flags are built: what a plugin registers becomes a valid --model / --data
        plugins, argv = split_plugin_arguments(list(sys.argv[1:] if argv is None else argv))
        for plugin in plugins:
            load_plugin(plugin)
    except UserInputError as error:
        print(f"filterscope: error: {error}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return VERBS[args.verb][1](args)
    except UserInputError as error:
        print(f"filterscope {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"filterscope {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"filterscope {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
