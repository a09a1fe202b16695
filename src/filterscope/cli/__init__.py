"""``filterscope <verb>``: thin verbs over the public API.

Each verb parses its flags, checks them and its run directory before any expensive work, calls the
public API and writes or prints its result; a verb that writes a run directory ends with the path
of its ``report.html``. Bad input ends with one sentence on stderr and exit code 2. The verbs live
in :mod:`.training_verbs` and :mod:`.analysis_verbs`, the flags they share in :mod:`.arguments`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..core.errors import UserInputError
from . import adversarial_verbs, analysis_verbs, concept_verbs, engine_verbs, path_verbs, training_verbs


VERBS = {
    "demo": (training_verbs.add_demo_parser, training_verbs.run_demo),
    "train": (training_verbs.add_train_parser, training_verbs.run_train),
    "decouple": (training_verbs.add_decouple_parser, training_verbs.run_decouple),
    "eval": (analysis_verbs.add_eval_parser, analysis_verbs.run_eval),
    "paths": (training_verbs.add_paths_parser, training_verbs.run_paths),
    "units": (analysis_verbs.add_units_parser, analysis_verbs.run_units),
    "models": (analysis_verbs.add_models_parser, analysis_verbs.run_models),
    "influence": (analysis_verbs.add_influence_parser, analysis_verbs.run_influence),
    "semantic-prune": (analysis_verbs.add_semantic_prune_parser, analysis_verbs.run_semantic_prune),
    "bench": (engine_verbs.add_bench_parser, engine_verbs.run_bench),
    "embed": (path_verbs.add_embed_parser, path_verbs.run_embed),
    "tree": (path_verbs.add_tree_parser, path_verbs.run_tree),
    "occlude": (concept_verbs.add_occlude_parser, concept_verbs.run_occlude),
    "dissect": (concept_verbs.add_dissect_parser, concept_verbs.run_dissect),
    "adversarial": (adversarial_verbs.add_adversarial_parser, adversarial_verbs.run_adversarial),
    "report": (analysis_verbs.add_report_parser, analysis_verbs.run_report),
}


class OneSentenceParser(argparse.ArgumentParser):
    """argparse prints its whole usage block before a bad flag's message; this prints the message
    alone, with where to look, and exits with code 2 as argparse does."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'.\n")


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("filterscope")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = OneSentenceParser(prog="filterscope", description="Which filters does each input, and each class, actually use?")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE",
                        help="a .py file or module that registers your own models or data sets (repeatable; "
                             "allowed anywhere on the line)")
    parser.add_argument("--version", action="version", version=f"filterscope {_installed_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for add_parser, _ in VERBS.values():
        add_parser(verbs)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line is one line for the user, not a source location (the default display
    calls this; code that records warnings, e.g. ``warnings.catch_warnings(record=True)``, is unaffected)."""
    return f"filterscope: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    from .plugins import load_plugin, split_plugin_arguments

    sys.stdout.reconfigure(line_buffering=True)  # a killed run's redirected log keeps every line printed
    try:  # before the flags are built: what a plugin registers becomes a valid --model / --data
        plugins, argv = split_plugin_arguments(list(sys.argv[1:] if argv is None else argv))
        for plugin in plugins:
            load_plugin(plugin)
    except UserInputError as error:
        print(f"filterscope: error: {error}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
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
