"""The verbs that train and write a whole run directory: train, decouple, demo, and paths of a decoupled run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from ..core.errors import UserInputError
from .arguments import (DefaultsShown, add_checkpoint_argument, add_data_arguments, add_execution_arguments,
                        add_run_dir_arguments, finish, prepare, resolve_checkpoint_argument)


def add_train_parser(verbs) -> None:
    from ..core.config import add_dataclass_arguments
    from ..training.train import TrainConfig

    parser = verbs.add_parser("train", help="train or fine-tune a model; writes a run directory", formatter_class=DefaultsShown)
    parser.add_argument("--config", help="YAML file of options (flags override it)")
    add_dataclass_arguments(parser, TrainConfig)
    add_run_dir_arguments(parser)
    add_execution_arguments(parser, batch_size=None, json_output=False)


def _require_model_and_data(args: argparse.Namespace, file_values: dict) -> None:
    """--model and --data are required on every verb (here: a flag or a key of --config), as on eval and the analyses."""
    for name in ("model", "data"):
        if not hasattr(args, name) and name not in file_values:
            raise UserInputError(f"--{name} is required (or '{name}:' in the --config file); e.g. --model digits_cnn --data digits.")


def _start_run(args: argparse.Namespace, config) -> object:
    """Check the run directory of a training config before any work (refusing to replace a run unless
    --overwrite, which then clears it), apply --quiet, and return the config to run."""
    namespace = argparse.Namespace(run_dir=config.run_dir, resume=config.resume, overwrite=args.overwrite,
                                   threads=config.threads, batch_size=config.batch_size)
    prepare(namespace)
    if args.overwrite and Path(config.run_dir).is_dir():
        shutil.rmtree(config.run_dir)  # asked for explicitly; checked above to be a folder
    if args.quiet:
        config = dataclasses.replace(config, progress=False)
    return config


def run_train(args) -> int:
    from ..core import distributed
    from ..core.config import read_yaml_config, resolve_config
    from ..training.train import TrainConfig, train

    file_values = read_yaml_config(args.config)
    config = resolve_config(TrainConfig, args, file_values)  # unknown keys of the file are reported first
    _require_model_and_data(args, file_values)
    config = _start_run(args, config)
    result = train(config)
    if distributed.is_main_process():
        print(json.dumps({"run_dir": str(result.run_dir), "accuracy": result.final["accuracy"], "split": config.eval_split}))
        finish(result.run_dir, args.verb)
    distributed.shutdown()
    return 0


# The options `filterscope decouple --help` lists; every other field of TrainConfig, DecoupleConfig and
# DecouplingRunOptions is set with --set NAME=VALUE or in a --config file (docs/decoupling-options.md).
DECOUPLE_FLAGS = (
    "model", "data", "weights", "epochs", "batch_size", "lr", "device", "threads", "run_dir", "resume",
    "preset", "lambda_mi", "lambda_kl", "lambda_sparsity", "sparsity_ratio", "log",
    "teacher_weights", "flops_target",
)


def add_decouple_parser(verbs) -> None:
    from ..core.config import add_dataclass_arguments
    from ..methods.decoupling import DecoupleConfig
    from ..pipelines.decoupling import DecouplingRunOptions
    from ..pipelines.recipes import DEFAULT_CONFIG, PAPER_CONFIG, RECIPES, config_values
    from ..training.train import TrainConfig

    parser = verbs.add_parser(
        "decouple", help="decouple a pretrained model: gates + L_mi, L_kl, L_s, trained with the common loop",
        description=f"Without --config the settings are the bundled config '{DEFAULT_CONFIG}' (the defaults shown below): "
                    "those of the best measured recipe, resnet20-cifar10-2x, less what belongs to its network "
                    f"(src/filterscope/pipelines/recipes/{DEFAULT_CONFIG}.yaml); --config {PAPER_CONFIG} gives the paper's. "
                    "The main options are flags; every other option (see docs/decoupling-options.md) is set with "
                    "--set NAME=VALUE or in a --config file.", formatter_class=DefaultsShown,
    )
    parser.add_argument("--config", action="append", default=argparse.SUPPRESS, metavar="FILE_OR_NAME",
                        help="YAML file of options (flat or in sections train/decouple/options) or a bundled config's name "
                             f"({', '.join(RECIPES)}); repeatable, later ones win; --set and flags override it. A file of "
                             f"your own starts from the dataclasses' defaults, not from '{DEFAULT_CONFIG}' (put --config "
                             f"{DEFAULT_CONFIG} before it for those) (default: {DEFAULT_CONFIG}; resuming: what the run recorded)")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="NAME=VALUE",
                        help="any option of the config file, VALUE read as YAML (e.g. --set sparsity_on=evaluation "
                             "--set 'include=[layer*.conv1]'); repeatable; flags override it")
    defaults = config_values(DEFAULT_CONFIG)  # what the help shows: the values a run without --config starts from
    for options in (TrainConfig, DecoupleConfig, DecouplingRunOptions):
        add_dataclass_arguments(parser, options, skip=tuple(f.name for f in dataclasses.fields(options)
                                                            if f.name not in DECOUPLE_FLAGS), defaults=defaults)
    parser.add_argument("--include", dest="include", nargs="*", default=argparse.SUPPRESS, help="unit name patterns to gate")
    parser.add_argument("--exclude", dest="exclude", nargs="*", default=argparse.SUPPRESS, help="unit name patterns not to gate")
    add_run_dir_arguments(parser)
    add_execution_arguments(parser, batch_size=None, json_output=False)


def _decouple_file_values(args) -> dict:
    """The values --config gives (flat, under today's option names; without --config the bundled
    'default', or what a resumed run recorded) with the --set values over them. A preset named by
    --set or a flag takes the loss weights and R it sets away from --config (see ``layered``)."""
    from ..methods.decoupling.presets import PRESET_FIELDS
    from ..pipelines.recipes import config_values, layered

    set_values = _set_values(args)
    flag_values = {name: getattr(args, name) for name in ("preset", *PRESET_FIELDS) if hasattr(args, name)}
    if hasattr(args, "config"):
        base = layered(*(config_values(config) for config in args.config))
    else:
        base = _default_values({**set_values, **vars(args)})
    return layered(base, set_values, flag_values)


def _default_values(given: dict) -> dict:
    """What a run without --config starts from: the bundled 'default' config, or for a resumed run the
    settings it recorded (a run begun by an earlier version, whose defaults were the dataclasses', goes on as it began)."""
    from ..pipelines.recipes import DEFAULT_CONFIG, config_values, recorded_run_settings
    from ..training.train import TrainConfig

    run_dir = given.get("run_dir") or TrainConfig.run_dir
    if given.get("resume") and (Path(run_dir) / "checkpoints" / "last.pt").is_file():
        return recorded_run_settings(run_dir)
    return config_values(DEFAULT_CONFIG)


def _set_values(args) -> dict:
    """The --set NAME=VALUE assignments, values read as YAML, under today's option names."""
    import yaml

    from ..methods.decoupling.legacy import upgrade_settings

    values: dict = {}
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


def decouple_configs(args: argparse.Namespace) -> list:
    """``(TrainConfig, DecoupleConfig, DecouplingRunOptions)`` of parsed ``filterscope decouple`` flags:
    the dataclasses' defaults ← --config (without it the bundled 'default') ← --set ← flags."""
    from ..core.config import resolve_configs
    from ..methods.decoupling import DecoupleConfig
    from ..pipelines.decoupling import DecouplingRunOptions
    from ..training.train import TrainConfig

    file_values = _decouple_file_values(args)
    configs = resolve_configs((TrainConfig, DecoupleConfig, DecouplingRunOptions), args, file_values)
    _require_model_and_data(args, file_values)
    return configs


def run_decouple(args) -> int:
    from ..core import distributed
    from ..pipelines.decoupling import run_decoupling

    train_config, decouple_config, options = decouple_configs(args)
    train_config = _start_run(args, train_config)
    summary = run_decoupling(train_config, decouple_config, options)
    if distributed.is_main_process():
        keys = ("accuracy", "mean_flops", "dense_flops", "flops_reduction", "energetic_fraction", "silent_fraction", "dynamic_fraction")
        print(json.dumps({"run_dir": train_config.run_dir, **{k: summary[k] for k in keys}}))
        finish(train_config.run_dir, args.verb)
    distributed.shutdown()
    return 0


def add_paths_parser(verbs) -> None:
    parser = verbs.add_parser(
        "paths", help="calculation paths and filter states of a decoupled model over a data split; written into its run directory",
        formatter_class=DefaultsShown,
    )
    add_checkpoint_argument(parser, "a `filterscope decouple` run directory or a decoupled checkpoint file")
    add_data_arguments(parser)
    add_run_dir_arguments(parser, help_text="where to write (default: the run directory of the checkpoint)")
    parser.add_argument("--no-save-paths", dest="save_paths", action="store_false",
                        help="write filter states and figures only, not the bit-packed paths")
    add_execution_arguments(parser)


def run_paths(args) -> int:
    from ..pipelines.paths import checkpoint_of, default_run_dir, record_checkpoint_paths

    checkpoint = checkpoint_of(resolve_checkpoint_argument(args))
    if not checkpoint.is_file():
        raise UserInputError(f"checkpoint {str(checkpoint)!r} does not exist; check the --weights path (a decoupled checkpoint "
                             "or its run directory).")
    run_dir = args.run_dir if args.run_dir is not None else str(default_run_dir(checkpoint))
    prepare(argparse.Namespace(**{**vars(args), "run_dir": run_dir}), analysis=f"paths_{args.split}")
    summary = record_checkpoint_paths(
        args.checkpoint, args.data, split=args.split, run_dir=run_dir, batch_size=args.batch_size,
        device=args.device, val_fraction=args.val_fraction, save_paths=args.save_paths, progress=not args.quiet,
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
    finish(summary["run_dir"], args.verb)
    return 0


def add_demo_parser(verbs) -> None:
    parser = verbs.add_parser("demo", help="every analysis end to end (train, decouple, paths, embedding, tree, occlusion, "
                              "dissection, adversarial detection, semantic pruning, influence, engine latency) and its "
                              "report.html; the digits CNN in about two minutes, or your own model and data",
                              formatter_class=DefaultsShown)
    add_run_dir_arguments(parser, default="runs/demo")
    parser.add_argument("--model", default="digits_cnn", help="registered model (or one a --plugin registers)")
    parser.add_argument("--data", default="digits", help="registered data set, or a folder or .zip of split/class/images")
    parser.add_argument("--weights", default=None, help="start here instead of training: a plain checkpoint (decoupled "
                        "next) or a decoupled one (analysed as it is)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of dense training (without --weights)")
    parser.add_argument("--decouple-epochs", type=int, default=15, help="epochs of decoupling; 0 skips it and the "
                        "steps that need gates")
    parser.add_argument("--quick", action="store_true", help="smaller samples and fewer steps on data other than digits")
    parser.add_argument("--seed", type=int, default=0, help="data order, initialisation, samples")
    add_execution_arguments(parser, batch_size=None, json_output=False)


def run_demo(args) -> int:
    from ..pipelines.demo import DemoOptions, run_demo as demo

    if args.epochs < 1:
        raise UserInputError(f"--epochs must be at least 1, got {args.epochs}.")
    if args.decouple_epochs < 0:
        raise UserInputError(f"--decouple-epochs must be at least 0 (0 skips decoupling), got {args.decouple_epochs}.")
    _check_demo_inputs(args)
    prepare(args)
    if args.overwrite and Path(args.run_dir).is_dir():
        shutil.rmtree(args.run_dir)
    summary = demo(DemoOptions(run_dir=args.run_dir, model=args.model, data=args.data, weights=args.weights,
                               epochs=args.epochs, decouple_epochs=args.decouple_epochs, quick=args.quick, seed=args.seed,
                               threads=args.threads, progress=not args.quiet))
    print(f"demo: {summary['model']} on {summary['data']}, {summary['seconds']:.0f} s")
    width = max(len(name) for name in summary["steps"])
    for name, line in summary["steps"].items():
        print(f"  {name:<{width}s}  {line}")
    print(f"report: {summary['report']}")
    sys.stdout.flush()
    return 0


def _check_demo_inputs(args) -> None:
    """An unknown model or data set, or a checkpoint that is missing, unreadable or of another architecture,
    fails now, before anything is trained or written."""
    from ..data.loading import dataset_info
    from ..models import create_model, model_spec
    from ..pipelines.demo_state import is_decoupled

    model_spec(args.model)
    dataset_info(args.data)
    if Path(args.data).expanduser().exists():  # a folder or zip: the demo reads both of its splits
        from ..data.image_folder import ImageFolderSource

        source = ImageFolderSource(args.data)
        for split in ("train", "test"):
            source.require_split(split)
    if args.weights is None:
        return
    if is_decoupled(args.weights):
        from ..methods.decoupling import load_decoupled

        load_decoupled(args.weights)  # its architecture is its own: the one it was decoupled from
    else:
        from ..models.checkpoint import load_weights

        load_weights(create_model(args.model), args.weights)
