"""The verbs that read a trained model: eval, units, models, influence, semantic-prune, and report."""

from __future__ import annotations

import argparse
import json

from .arguments import (DefaultsShown, add_data_arguments, add_execution_arguments, add_model_arguments,
                        add_run_dir_arguments, finish, prepare)


def add_eval_parser(verbs) -> None:
    parser = verbs.add_parser("eval", help="evaluate a checkpoint (plain or decoupled) on a data split",
                              formatter_class=DefaultsShown)
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_execution_arguments(parser)


def run_eval(args) -> int:
    from ..analyses.evaluate import evaluate_checkpoint

    prepare(args)
    result = evaluate_checkpoint(
        args.model, args.weights, args.data, split=args.split, batch_size=args.batch_size,
        device=args.device, val_fraction=args.val_fraction, progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} on {args.data} [{args.split}]: top-1 {result['accuracy']:.4f}, loss {result['loss']:.4f}, {result['num_samples']} images")
        for name, accuracy in zip(result["classes"], result["per_class_accuracy"]):
            print(f"  {name:>12s} {accuracy:.4f}")
    return 0


def add_units_parser(verbs) -> None:
    parser = verbs.add_parser("units", help="list a model's conv units with their FLOPs and parameters",
                              formatter_class=DefaultsShown)
    add_model_arguments(parser, weights=False)
    parser.add_argument("--num-classes", type=int, default=None, help="classes of the final layer (default: the model's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def units_table(units, costs) -> str:
    """The units as a table with each one's FLOPs and parameters, and the totals."""
    per_unit = {cost.name: cost for cost in costs.units}
    rows = [("#", "name", "in", "out", "HxW", "FLOPs", "params", "gateable")]
    for unit in units:
        size = "x".join(map(str, unit.output_size)) if unit.output_size else "?"
        cost = per_unit.get(unit.name)
        gateable = "yes" if unit.gateable else f"no ({unit.reason_not_gateable})"
        rows.append((str(unit.index), unit.name, str(unit.in_channels), str(unit.out_channels), size,
                     f"{cost.flops:,}" if cost else "?", f"{cost.params:,}" if cost else "?", gateable))
    rows.append(("", "total (with the linear layers)", "", "", "", f"{costs.total_flops:,}", f"{costs.total_params:,}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.rjust(w) if i in (0, 2, 3, 5, 6) else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))) + "  " + row[-1] for row in rows)


def run_units(args) -> int:
    from ..core.flops import count_costs
    from ..core.units import find_units
    from ..models import create_model, model_spec

    spec = model_spec(args.model)
    model = create_model(args.model, args.num_classes)
    units = find_units(model, spec.input_shape)
    costs = count_costs(model, spec.input_shape, units)
    print(json.dumps(costs.to_dict()) if args.json else units_table(units, costs))
    return 0


def add_models_parser(verbs) -> None:
    verbs.add_parser("models", help="list the registered models")


def run_models(args) -> int:
    from ..models import MODELS

    for name in sorted(MODELS):
        spec = MODELS[name]
        print(f"{name:16s} input {'x'.join(map(str, spec.input_shape)):8s} {spec.description}")
    return 0


def add_report_parser(verbs) -> None:
    parser = verbs.add_parser("report", help="write report.html of a run directory from its metrics, figures and config")
    parser.add_argument("run_dir_positional", nargs="?", metavar="RUN_DIR", help="the run directory (same as --run-dir)")
    parser.add_argument("--run-dir", help="a folder a filterscope verb wrote")
    parser.add_argument("--single-file", action="store_true", help="embed the figures in the page so it can be sent alone")


def run_report(args) -> int:
    from ..core.errors import UserInputError
    from ..report.html import build_report

    run_dir = args.run_dir or args.run_dir_positional
    if run_dir is None:
        raise UserInputError("give the run directory: filterscope report RUN_DIR (or --run-dir RUN_DIR).")
    print(f"report: {build_report(run_dir, single_file=args.single_file)}")  # the verb's one result, on stdout
    return 0


def _add_per_class_arguments(parser: argparse.ArgumentParser, *, split_help: str) -> None:
    """The flags of the per-class analysis verbs: statistics from --split, evaluation on --eval-split."""
    add_data_arguments(parser, split_default="train", split_help=split_help, eval_split=True)
    add_run_dir_arguments(parser, help_text="also write metrics, arrays, figures and report.html into this run directory")
    add_execution_arguments(parser)


def _per_class_settings(args):
    from ..pipelines.per_class import PerClassSettings

    return PerClassSettings(args.model, args.weights, args.data, args.split, args.eval_split, args.val_fraction,
                            args.batch_size, args.device, args.run_dir, not args.quiet)


def _check_classes(args) -> None:
    """Unknown --classes fail now, from the data set's class list, before any image is decoded."""
    from ..data.loading import dataset_info
    from ..methods.semantic_pruning.selection import resolve_class

    if args.classes:
        classes = dataset_info(args.data).classes
        for value in args.classes:
            resolve_class(value, classes, len(classes))


def _check_unit(model_name: str, at: str) -> None:
    """An --at that names no unit of the model fails now, before the data is loaded."""
    from ..core.errors import UserInputError
    from ..core.units import find_units
    from ..methods.influence.final_layer import FINAL
    from ..models import create_model, model_spec

    if at == FINAL:
        return
    names = [unit.name for unit in find_units(create_model(model_name), model_spec(model_name).input_shape)]
    if at not in names:
        raise UserInputError(f"--at {at!r} is not a unit of {model_name}; pass 'final' or one of {', '.join(names[:6])}, ... "
                             f"(filterscope units --model {model_name} lists them).")


def add_influence_parser(verbs) -> None:
    from ..methods.influence import CRITERIA, LABEL_SOURCES

    parser = verbs.add_parser("influence", help="class-specific influential features (Algorithm 1) and the decomposed "
                              "final layer", formatter_class=DefaultsShown)
    add_model_arguments(parser)
    parser.add_argument("--k1", type=int, default=5, help="features counted per instance (top by l1 norm)")
    parser.add_argument("--k2", type=int, default=5, help="features kept per class")
    parser.add_argument("--criterion", default="l1", choices=sorted(CRITERIA), help="how features are ranked per class")
    parser.add_argument("--labels", default="true", choices=LABEL_SOURCES, help="group instances by true or predicted class")
    parser.add_argument("--at", default="final", help="'final' (input of the final linear layer) or a unit name")
    parser.add_argument("--k-grid", type=int, nargs="+", default=[], metavar="K",
                        help="also r_A of the decomposed layer for every k1 × k2 of these values (the paper's Fig. 3)")
    _add_per_class_arguments(parser, split_help="split the index sets come from")


def run_influence(args) -> int:
    from ..core.errors import UserInputError
    from ..methods.influence import InfluenceConfig

    config = InfluenceConfig(k1=args.k1, k2=args.k2, criterion=args.criterion, labels=args.labels, at=args.at)
    config.validate()
    _check_unit(args.model, args.at)
    if args.k_grid and (min(args.k_grid) < 1 or args.at != "final"):
        raise UserInputError("--k-grid takes positive values and reads the final layer (--at final); "
                             f"got {args.k_grid} at {args.at!r}.")
    return _run_per_class(args, "influence", lambda settings: _influence_pipeline()(settings, config, k_grid=args.k_grid),
                          _print_influence)


def _influence_pipeline():
    from ..pipelines.influence import run_influence  # imported after the checks: it imports matplotlib

    return run_influence


def _print_influence(args, summary) -> None:
    print(f"{args.model}: k1={args.k1}, k2={args.k2}, criterion {args.criterion}, index sets from [{args.split}]")
    for name, features in summary["indices"].items():
        print(f"  {name:>12s} {features}")
    if "accuracy_full" in summary:
        print(f"[{args.eval_split}] full {summary['accuracy_full']:.4f}, decomposed {summary['accuracy_decomposed']:.4f}, "
              f"r_A {summary['relative_accuracy']:.4f}; final layer {summary['flops_final_full']:,} -> "
              f"{summary['flops_final_decomposed']:,} FLOPs")


def _run_per_class(args, analysis: str, run_pipeline, print_text) -> int:
    """Check everything, run the per-class pipeline, record the verb's flags, print, build the report."""
    prepare(args, analysis=analysis)
    return finish_analysis(args, run_pipeline(_per_class_settings(args)), print_text)


def finish_analysis(args, summary: dict, print_text) -> int:
    """What every analysis verb does once its result is in: record its flags, print the summary (one JSON
    object with --json, else ``print_text(args, summary)``), build the report and say where it is."""
    write_verb_config(args)
    if args.json:
        print(json.dumps(summary))
    else:
        print_text(args, summary)
    finish(args.run_dir, args.verb)
    return 0


def add_semantic_prune_parser(verbs) -> None:
    from ..core.unit_hooks import DEFAULT_WHERE, WHERE
    from ..methods.semantic_pruning import DEFAULT_RATIOS, MODES

    parser = verbs.add_parser("semantic-prune", help="prune filters for one class by accumulated response (no "
                              "retraining) and evaluate", formatter_class=DefaultsShown)
    add_model_arguments(parser)
    parser.add_argument("--classes", nargs="+", default=None, help="class names or indices (default: every class)")
    parser.add_argument("--mode", nargs="+", default=list(MODES), choices=MODES, help="nwp (network-wise), lwp (layer-wise)")
    parser.add_argument("--ratios", nargs="+", default=[str(r) for r in DEFAULT_RATIOS],
                        help="ratios θ in [0, 1], '0-score' or 'median'")
    parser.add_argument("--where", default=DEFAULT_WHERE, choices=WHERE, help="where filter responses are read")
    parser.add_argument("--exclude", nargs="*", default=[], help="unit names never pruned")
    parser.add_argument("--masks-per-pass", type=int, default=8, help="pruned networks evaluated in one forward pass")
    _add_per_class_arguments(parser, split_help="split the responses come from")


def run_semantic_prune(args) -> int:
    from ..methods.semantic_pruning import SemanticPruningConfig

    config = SemanticPruningConfig(
        modes=tuple(args.mode), settings=tuple(args.ratios), classes=tuple(args.classes) if args.classes else None,
        where=args.where, exclude=tuple(args.exclude), masks_per_pass=args.masks_per_pass,
    )
    config.validate()
    _check_classes(args)
    return _run_per_class(args, "semantic_pruning", lambda settings: _semantic_pipeline()(settings, config),
                          _print_semantic_pruning)


def _semantic_pipeline():
    from ..pipelines.semantic_pruning import run_semantic_pruning  # imported after the checks: it imports matplotlib

    return run_semantic_pruning


def _print_semantic_pruning(args, summary) -> None:
    print(f"{args.model}: responses [{args.split}] at {args.where}, evaluated on [{args.eval_split}]")
    print(f"  {'class':>12s} {'mode':4s} {'θ':>7s} {'DP':>6s} {'RP':>6s} {'recall':>7s} {'prec.':>7s} {'AUC':>7s} {'acc.':>7s}")
    for row in summary["results"]:
        dead = "  dead: " + ", ".join(row["emptied_units"]) if row["dead"] else ""
        print(f"  {row['class']:>12s} {row['mode']:4s} {str(row['setting']):>7s} {row['fraction_direct']:6.3f} "
              f"{row['fraction_residual']:6.3f} {row['recall']:7.4f} {row['precision']:7.4f} {row['auc']:7.4f} "
              f"{row['accuracy']:7.4f}{dead}")


def write_verb_config(args) -> None:
    """Record the verb's flags as the run directory's ``<verb>.yaml`` (each analysis its own file)."""
    from ..io.run_dir import RunDir

    if args.run_dir is not None:
        RunDir(args.run_dir).write_config({"verb": args.verb, **{k: v for k, v in vars(args).items() if k != "verb"}},
                                          name=f"{args.verb}.yaml")
