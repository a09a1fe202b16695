"""The verbs that read concepts from a model: occlude (occlusion concept analysis) and dissect (dissection scores)."""

from __future__ import annotations

import argparse
import json

from ..core.errors import UserInputError
from .arguments import DefaultsShown, add_execution_arguments, add_run_dir_arguments, finish, prepare


def _add_shared(parser: argparse.ArgumentParser) -> None:
    from ..analyses.receptive_fields import DEFAULT_QUANTILE
    from ..data import SPLITS

    parser.add_argument("--weights", required=True, help="checkpoint path")
    parser.add_argument("--split", default="test", choices=SPLITS, help="data split")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of the training split held out as 'val'")
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                        help="top quantile of each filter's activations that bounds its receptive field")
    add_run_dir_arguments(parser, help_text="also write metrics, arrays, figures and report.html into this run directory")
    add_execution_arguments(parser, batch_size=100)


def add_occlude_parser(verbs) -> None:
    from ..analyses.occlusion import FILLS

    parser = verbs.add_parser("occlude", help="occlusion concept analysis: the filters a region switches off in a "
                              "decoupled model, and their receptive fields' IoU with it", formatter_class=DefaultsShown)
    parser.add_argument("--data", required=True, help="registered data set name, or a folder or .zip of split/class/image files")
    region = parser.add_mutually_exclusive_group(required=True)
    region.add_argument("--box", type=int, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="region in pixels: columns x0 <= x < x1, rows y0 <= y < y1")
    region.add_argument("--mask", help="region as an image of the input size whose non-zero pixels mark it")
    region.add_argument("--regions", help="batch mode: a CSV with one region per image, header index,x0,y0,x1,y1 or index,mask")
    parser.add_argument("--images", type=int, default=100, help="N images evenly spaced over the split (not with --regions)")
    parser.add_argument("--fill", default="black", choices=FILLS,
                        help="black: pixel value 0; mean: the analysed images' mean per channel (in normalised space)")
    parser.add_argument("--quantile-images", type=int, default=None,
                        help="images, evenly spaced over the split, the quantile is taken over (default: 1000, or all there are)")
    _add_shared(parser)


def _check_numbers(args) -> None:
    """Counts and the quantile out of range fail now, before the model or the data is loaded."""
    from ..analyses.receptive_fields import check_quantile

    check_quantile(args.quantile)
    for flag in ("images", "quantile_images"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UserInputError(f"--{flag.replace('_', '-')} must be at least 1, got {value}.")


def run_occlude(args) -> int:
    from ..pipelines.occlusion import OcclusionSettings

    _check_numbers(args)
    prepare(args, analysis="occlusion")
    settings = OcclusionSettings(
        weights=args.weights, data=args.data, split=args.split, images=args.images,
        box=tuple(args.box) if args.box else None, mask=args.mask, regions_csv=args.regions, fill=args.fill,
        quantile=args.quantile, quantile_images=args.quantile_images, batch_size=args.batch_size, device=args.device,
        val_fraction=args.val_fraction, run_dir=args.run_dir, progress=not args.quiet)
    summary = _pipeline("occlusion")(settings)
    _write_config(args)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"occlusion of {summary['num_images']} images ({summary['region_fraction']:.1%} of each, fill "
              f"{args.fill}); prediction changed for {summary['prediction_changed']:.1%}")
        print(f"  {'layer':>18s} {'off/img':>8s} {'single':>7s} {'best':>7s} {'union':>7s} {'union/single':>12s} {'stayed on':>9s}")
        for name, row in summary["per_layer"].items():
            print(f"  {name:>18s} {row['mean_switched_off']:8.2f} {row['single_iou']:7.4f} {row['best_single_iou']:7.4f} "
                  f"{row['union_iou']:7.4f} {row['union_over_single']:12.2f} {row['stayed_on_iou']:9.4f}")
    finish(args.run_dir, args.verb)
    return 0


def add_dissect_parser(verbs) -> None:
    from ..models import MODELS

    parser = verbs.add_parser("dissect", help="dissection scores of each layer's filters (colour terms or a BRODEN "
                              "folder), decoupled beside dense", formatter_class=DefaultsShown)
    parser.add_argument("--data", default=None, help="images whose pixels are named by colour (--concepts colour)")
    parser.add_argument("--concepts", default="colour", help="'colour' (11 colour terms of every pixel of --data) or a "
                        "BRODEN-format folder (index.csv, label.csv, images/)")
    parser.add_argument("--images", type=int, default=None, help="images to dissect, evenly spaced over the split (default: 1000, or all there are); the first N of a BRODEN folder")
    parser.add_argument("--model", default=None, choices=sorted(MODELS),
                        help="architecture of a checkpoint without gates (then only the dense network is dissected)")
    parser.add_argument("--dense-weights", default=None, help="a dense checkpoint of the base architecture to dissect as "
                        "'dense' (default: the decoupled checkpoint without its gates)")
    parser.add_argument("--min-concept-fraction", type=float, default=0.0,
                        help="a colour covering less of an image than this share counts as absent from it")
    _add_shared(parser)


def run_dissect(args) -> int:
    from ..pipelines.dissection import DissectionSettings

    if not 0.0 <= args.min_concept_fraction < 1.0:
        raise UserInputError(f"--min-concept-fraction must lie in [0, 1), got {args.min_concept_fraction}.")
    _check_numbers(args)
    if args.dense_weights is not None:
        from ..models.checkpoint import check_checkpoint_exists

        check_checkpoint_exists(args.dense_weights, "--dense-weights")
    prepare(args, analysis="dissection")
    settings = DissectionSettings(
        weights=args.weights, data=args.data, split=args.split, concepts=args.concepts, images=args.images,
        quantile=args.quantile, model=args.model, dense_weights=args.dense_weights,
        min_concept_fraction=args.min_concept_fraction, batch_size=args.batch_size, device=args.device,
        val_fraction=args.val_fraction, run_dir=args.run_dir, progress=not args.quiet)
    summary = _pipeline("dissection")(settings)
    _write_config(args)
    if args.json:
        print(json.dumps({key: summary[key] for key in ("concepts", "num_images", "variants", "per_layer", "run_dir")}))
    else:
        if summary.get("notice"):
            print(summary["notice"])
        variants = list(summary["variants"])
        print(f"dissection over {summary['num_images']} images ({summary['concepts']})")
        print(f"  {'layer':>18s} " + " ".join(f"{v + ' score':>15s} {v + ' det.':>14s}" for v in variants))
        for row in summary["per_layer"]:
            print(f"  {row['layer']:>18s} " + " ".join(
                f"{row[f'{v}_score']:15.4f} {row[f'{v}_detectors']:>8d}/{row['filters']:<5d}" for v in variants))
    finish(args.run_dir, args.verb)
    return 0


def _pipeline(name: str):
    """The pipeline, imported after the checks (it imports matplotlib)."""
    if name == "occlusion":
        from ..pipelines.occlusion import run_occlusion

        return run_occlusion
    from ..pipelines.dissection import run_dissection

    return run_dissection


def _write_config(args) -> None:
    from .analysis_verbs import write_verb_config

    write_verb_config(args)
