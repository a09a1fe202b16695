"""``filterscope adversarial``: detectors of adversarial inputs from a decoupled model's calculation paths."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import UserInputError
from .arguments import (DefaultsShown, add_checkpoint_argument, add_execution_arguments, add_run_dir_arguments,
                        prepare, resolve_checkpoint_argument)


def pixel_budget(text: str) -> float:
    """An L∞ budget as a number or a fraction of grey levels ("8/255")."""
    try:
        if "/" in text:
            numerator, denominator = text.split("/", 1)
            return float(numerator) / float(denominator)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction such as 8/255") from None


def add_adversarial_parser(verbs) -> None:
    from ..analyses.adversarial_features import DEFAULT_FEATURES, FEATURES
    from ..analyses.attacks import ATTACKS
    from ..analyses.detection import CLASSIFIERS

    parser = verbs.add_parser("adversarial", help="attack a decoupled checkpoint (FGSM, PGD) and detect the adversarials "
                              "from calculation paths against dense and CDRP features (Table 6, Fig. 10)",
                              formatter_class=DefaultsShown)
    add_checkpoint_argument(parser, "a decoupled checkpoint or its run directory")
    parser.add_argument("--data", required=True, help="the data set the model was trained on (registered name, folder or .zip)")
    parser.add_argument("--attack", nargs="+", default=list(ATTACKS), choices=ATTACKS,
                        help="attacks; with both, a detector trained on FGSM is also tested on PGD")
    parser.add_argument("--eps", type=pixel_budget, default=8 / 255, help="L∞ budget in pixel units of [0, 1] images (8/255 allowed)")
    parser.add_argument("--pgd-steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--pgd-step-size", type=pixel_budget, default=None, help="PGD step (default 2.5·eps/steps)")
    parser.add_argument("--zero-gradient-threshold", type=float, default=0.0,
                        help="captum's FGSM leaves pixels with |gradient| at or below this unchanged (captum's own default "
                             "1e-6 weakens the attack; 0 is standard FGSM)")
    parser.add_argument("--features", nargs="+", default=list(DEFAULT_FEATURES), choices=FEATURES, help="detector inputs")
    parser.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=list(CLASSIFIERS), help="detectors")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 5, 10], help="training images per class (plus theirs)")
    parser.add_argument("--runs", type=int, default=5, help="independent draws of the training images (seeds)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--pool-per-class", type=int, default=20, help="training-split images per class attacked")
    parser.add_argument("--test-per-class", type=int, default=100, help="test-split images per class in the fixed test set")
    parser.add_argument("--pair", nargs=2, default=["dog", "truck"], metavar=("A", "B"),
                        help="class pair of the Fig. 10 paths (names or indices; the default only where the data has them)")
    parser.add_argument("--no-pair", action="store_true", help="skip the class pair")
    parser.add_argument("--pair-attack", default="pgd", choices=ATTACKS, help="targeted attack of the pair")
    parser.add_argument("--cdrp-steps", type=int, default=30, help="critical routing paths: gradient steps per image")
    parser.add_argument("--cdrp-lr", type=float, default=0.1, help="critical routing paths: learning rate")
    parser.add_argument("--cdrp-l1", type=float, default=0.05, help="critical routing paths: L1 weight γ")
    parser.add_argument("--cdrp-threshold", type=float, default=0.0, help="critical routing paths: binary path is λ > this")
    add_run_dir_arguments(parser)
    add_execution_arguments(parser, batch_size=128)


def options_from(args):
    """The options of the pipeline, every number checked (before any model or image is loaded)."""
    from ..analyses.adversarial import AdversarialConfig
    from ..analyses.detection import DetectionConfig
    from ..analyses.routing_paths import CriticalPathConfig
    from ..pipelines.adversarial import DEFAULT_PAIR, AdversarialOptions, check_sizes

    config = AdversarialConfig(
        attacks=tuple(args.attack), eps=args.eps, pgd_steps=args.pgd_steps, pgd_step_size=args.pgd_step_size,
        zero_gradient_threshold=args.zero_gradient_threshold, features=tuple(args.features),
        detection=DetectionConfig(classifiers=tuple(args.classifiers), n_per_class=tuple(args.n), runs=args.runs,
                                  seed=args.seed),
        critical=CriticalPathConfig(steps=args.cdrp_steps, learning_rate=args.cdrp_lr, l1=args.cdrp_l1,
                                    threshold=args.cdrp_threshold, batch_size=min(args.batch_size, 64)),
        pair_attack=args.pair_attack, batch_size=args.batch_size).validate()
    pair = None if args.no_pair else tuple(args.pair)
    options = AdversarialOptions(checkpoint=args.checkpoint, data=args.data, config=config,
                                 pool_per_class=args.pool_per_class, test_per_class=args.test_per_class,
                                 pair=DEFAULT_PAIR if pair == DEFAULT_PAIR else pair, run_dir=args.run_dir,
                                 device=args.device, progress=not args.quiet)
    check_sizes(options)
    return options


def run_adversarial(args) -> int:
    from ..pipelines.adversarial import run_adversarial as measure
    from ..pipelines.paths import checkpoint_of
    from .analysis_verbs import finish_analysis

    resolve_checkpoint_argument(args)
    options = options_from(args)
    if not Path(args.checkpoint).exists():
        raise UserInputError(f"checkpoint {str(args.checkpoint)!r} does not exist; check the --weights path (a decoupled checkpoint "
                             "or its run directory).")
    checkpoint_of(args.checkpoint)  # a run directory without its checkpoint fails now
    prepare(args, analysis="adversarial")
    return finish_analysis(args, measure(options), lambda _, summary: _print_summary(summary))


def _print_summary(summary: dict) -> None:
    for method, splits in summary["attacks"].items():
        test = splits["test"]
        print(f"{method}: success {test['success_rate']:.3f} on the test images ({test['successful']} of "
              f"{test['correct_before']} correctly classified; {test['dropped_misclassified_before']} misclassified "
              f"before and {test['dropped_attack_failed']} failed attacks dropped)")
    print(f"{'train → test':14s} {'classifier':18s} {'n':>3s} " + " ".join(f"{f:>15s}" for f in summary["features"]))
    rows: dict[tuple, dict] = {}
    for row in summary["table"]:
        rows.setdefault((row["train_attack"], row["test_attack"], row["classifier"], row["n"]), {})[row["feature"]] = row
    for (train, test, classifier, n), by_feature in rows.items():
        cells = " ".join(f"{by_feature[f]['auc_mean']:7.3f} ± {by_feature[f]['auc_std']:.3f}" for f in summary["features"])
        print(f"{train + ' → ' + test:14s} {classifier:18s} {n:3d} {cells}")
    if summary.get("pair"):
        pair = summary["pair"]
        print(f"pair {pair['source']} → {pair['target']}: mean Hamming distance of the adversarial paths to real "
              f"{pair['source']} {pair['mean_hamming']['adversarial_to_real_a']:.1f}, to real {pair['target']} "
              f"{pair['mean_hamming']['adversarial_to_real_b']:.1f} (real to real {pair['mean_hamming']['real_a_to_real_b']:.1f})")
    for warning in summary["warnings"] + summary["notes"]:
        print(f"warning: {warning}")
