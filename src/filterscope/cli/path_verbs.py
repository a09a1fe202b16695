"""The verbs that read a decoupled model's calculation paths: embed (path embedding) and tree (Hopkins tree)."""

from __future__ import annotations

import argparse

from ..core.errors import UserInputError
from .analysis_verbs import finish_analysis
from .arguments import DefaultsShown, add_data_arguments, add_execution_arguments, add_run_dir_arguments, prepare


def _add_path_arguments(parser: argparse.ArgumentParser, analysis: str) -> None:
    """The flags embed and tree share: the decoupled checkpoint, the images, the sample, the run directory."""
    parser.add_argument("--weights", required=True, help="a decoupled checkpoint (or a `filterscope decouple` run directory)")
    add_data_arguments(parser)
    parser.add_argument("--samples", type=int, default=None,
                        help="images drawn from the split, seeded (default: the whole split, at most 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sample and the analysis")
    add_run_dir_arguments(parser, help_text=f"write metrics.json[{analysis!r}], arrays, figures and report.html here")
    add_execution_arguments(parser)


def _settings(args):
    from ..pipelines.path_interpretation import PathAnalysisSettings

    return PathAnalysisSettings(
        weights=args.weights, data=args.data, split=args.split, samples=args.samples, seed=args.seed,
        val_fraction=args.val_fraction, batch_size=args.batch_size, device=args.device,
        dense_weights=getattr(args, "dense_weights", None), run_dir=args.run_dir, progress=not args.quiet,
    )


def _check_samples(samples: int | None, needed: int, what: str) -> None:
    if samples is not None and samples < needed:
        raise UserInputError(f"--samples {samples} is too few: {what} needs at least {needed} images.")


def _run(args, analysis: str, run_pipeline, print_text) -> int:
    """Check everything, run the pipeline, record the verb's flags, print, build the report."""
    from ..pipelines.paths import checkpoint_of

    args.weights = str(checkpoint_of(args.weights))  # a `filterscope decouple` run directory: its checkpoints/last.pt
    prepare(args, analysis=analysis)
    if getattr(args, "dense_weights", None):
        from ..models.checkpoint import check_checkpoint_exists

        check_checkpoint_exists(args.dense_weights, "--dense-weights")
    return finish_analysis(args, run_pipeline(_settings(args)), print_text)


def add_embed_parser(verbs) -> None:
    from ..core.unit_hooks import DEFAULT_WHERE, WHERE

    parser = verbs.add_parser("embed", help="t-SNE of a decoupled model's calculation paths, with k-NN accuracy, silhouette "
                              "and mutual information beside the dense model's activation patterns",
                              formatter_class=DefaultsShown)
    _add_path_arguments(parser, "path_embedding")
    parser.add_argument("--dense-weights", default=None,
                        help="plain checkpoint of the same architecture for the dense baselines (default: the decoupled "
                             "checkpoint's weights without gates)")
    parser.add_argument("--neighbours", type=int, default=5, help="k of the k-NN classifier")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="share of each class held out from the k-NN fit")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    parser.add_argument("--pca-dims", type=int, default=300, help="PCA components before t-SNE, at most")
    parser.add_argument("--where", default=DEFAULT_WHERE, choices=WHERE, help="where the dense units' responses are read")


def run_embed(args) -> int:
    from ..analyses.path_embedding import MIN_INPUTS, PathEmbeddingConfig

    config = PathEmbeddingConfig(pca_dims=args.pca_dims, perplexity=args.perplexity, neighbours=args.neighbours,
                                 test_fraction=args.test_fraction, seed=args.seed, where=args.where).validate()
    _check_samples(args.samples, MIN_INPUTS, "the path embedding")

    def pipeline(settings):
        from ..pipelines.path_interpretation import run_path_embedding  # after the checks: it imports matplotlib

        return run_path_embedding(settings, config)

    return _run(args, "path_embedding", pipeline, _print_embedding)


def _print_embedding(args, summary) -> None:
    print(f"{summary['num_inputs']} images of {args.data} [{args.split}]; {summary['knn_neighbours']}-NN trained on "
          f"{summary['knn_train_inputs']}, scored on {summary['knn_test_inputs']} (chance {summary['knn_chance']:.3f})")
    print(f"  {'representation':16s} {'dims':>5s} {'k-NN acc.':>9s} {'sil. 2-D':>8s} {'sil. PCA':>8s} {'mean AMI':>8s}")
    for name, scores in summary["representations"].items():
        silhouettes = ["-" if scores[k] is None else f"{scores[k]:.3f}" for k in ("silhouette_embedding", "silhouette_pca")]
        adjusted = [layer["mi_adjusted"] for layer in scores["mutual_information"].values()]
        print(f"  {name:16s} {scores['dims']:5d} {scores['knn_accuracy']:9.3f} {silhouettes[0]:>8s} {silhouettes[1]:>8s} "
              f"{sum(adjusted) / len(adjusted):8.3f}")


def add_tree_parser(verbs) -> None:
    parser = verbs.add_parser("tree", help="decision tree of a decoupled model: split groups of inputs where their gate "
                              "vectors cluster (Hopkins statistic), layer by layer", formatter_class=DefaultsShown)
    _add_path_arguments(parser, "path_tree")
    parser.add_argument("--threshold", type=float, default=0.75, help="split a group where the Hopkins statistic exceeds this")
    parser.add_argument("--min-size", type=int, default=50, help="groups with fewer images are not split")


def run_tree(args) -> int:
    from ..analyses.hopkins_tree import HopkinsTreeConfig

    config = HopkinsTreeConfig(threshold=args.threshold, min_size=args.min_size, seed=args.seed).validate()
    _check_samples(args.samples, config.min_size, f"a tree with --min-size {config.min_size}")

    def pipeline(settings):
        from ..pipelines.path_interpretation import run_path_tree  # after the checks: it imports matplotlib

        return run_path_tree(settings, config)

    return _run(args, "path_tree", pipeline, _print_tree)


def _print_tree(args, summary) -> None:
    print(f"{summary['num_inputs']} images of {args.data} [{args.split}]: {summary['splits']} splits, {summary['leaves']} "
          f"leaves (Hopkins > {args.threshold:g}, groups of at least {args.min_size})")
    for layer, count in summary["splits_per_layer"].items():
        if count:
            print(f"  {layer}: {count} split(s)")
    for name, row in summary["class_parting"].items():
        where = row["first_parts_at"] or "never"
        print(f"  {name:>12s} first parts at {where}" + (f" from {', '.join(row['parts_from'])}" if row["parts_from"] else ""))
