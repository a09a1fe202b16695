"""Never lose work, fail early: every verb × every kind of bad input, swept from one table.

``SWEEP`` says, for each verb of the CLI, how to call it validly and cheaply and where each kind of input
goes (its checkpoint flags, data, model, classes, units, numbers, run directory); ``KINDS`` turns one kind
of bad input into the cases of every verb it applies to. A kind that does not apply to a verb is named in
the verb's ``not_applicable`` with the reason, so nothing is dropped silently, and a verb added to the CLI
joins the sweep by one ``Verb(...)`` entry (``test_every_verb_answers_every_kind`` fails until it has one).

Every case must end with exit code 2 and exactly one line on stderr (a warning counts as a line), without
a traceback, within 2 s of CPU time (process time: the bound holds on a busy machine too, and decoding the
CIFAR training split alone takes about 20 s of it), and leave the sandbox it runs in (the run directories,
their parents and the earlier finished run) byte-identical, with no new file or folder. The read-only run
directory is a folder made unwritable with ``chmod a-w`` or, as root (who ignores permission bits), with
``chattr +i``; a run directory on /proc (which refuses new entries to every user, root included) and one
below a regular file are two more cases that hold for any user.

``python tests/test_cli_safety.py`` writes the table of cases (verb × kind → what the CLI says, and "n/a"
with the reason where a kind does not apply) into docs/cli-errors.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from filterscope.cli import VERBS, main
from filterscope.core.locations import shared_dir

from conftest import make_read_only, release_read_only
from test_cli import assert_one_clear_error, run_cli

R20 = shared_dir() / "models" / "resnet20-12fca82f.th"
CIFAR = shared_dir() / "data" / "cifar10-jpeg.zip"
DECOUPLED_FIXTURE = Path(__file__).parent / "fixtures" / "decoupled_digits_demo.pt"

CPU_SECONDS = 2.0  # the bound on each case's process time
PROC_RUN_DIR = "/proc/filterscope-sweep/run"  # no user can create it, root included


# ---------------------------------------------------------------------------------------------------------
# The table: how each verb is called, and where each kind of input goes.
# Values are templates: "{tmp}" is the sandbox the sweep writes its inputs into, "{verb}" the verb's name.

@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint a verb reads."""

    flag: str | None  # None: the positional argument
    form: str  # "plain" (a model's state dict), "decoupled" (of `filterscope decouple`) or "pruned"
    required: bool = True  # a valid call gives it; an optional one appears only in its own bad-input cases
    needs: tuple[str, ...] = ()  # what else a call that gives it must say (a teacher needs a distillation weight)


GOOD_CHECKPOINT = {"plain": "{tmp}/digits_cnn.pt", "decoupled": "{tmp}/decoupled.pt", "pruned": None}


@dataclasses.dataclass(frozen=True)
class Verb:
    """How the sweep calls one verb validly (and cheaply), and where each kind of input goes.

    Attributes:
        name: the verb.
        call: the rest of a valid call (few epochs, one thread, --quiet).
        model: the flag of the model name.
        checkpoints: the checkpoints it reads.
        data: the flag of the data set.
        classes: the flag that takes class names.
        units: the flags that take unit names.
        numbers: (arguments with a number out of range, what the one line must say).
        run_dir: the flag of the run directory.
        run_dir_use: "new" (created, a run in it refused), "analysis" (an analysis added to a run, the same
            analysis in it refused) or "read" (an existing run, read and given a report.html).
        resume: it has --resume.
        overrides: kind → (variant, replaced slot, arguments, what the line must say), where a kind takes
            another form for this verb (the slots: "model", "data", "run_dir", "checkpoint:<flag>").
        not_applicable: kind → why it does not apply to this verb.
    """

    name: str
    call: tuple[str, ...] = ()
    model: str | None = None
    checkpoints: tuple[Checkpoint, ...] = ()
    data: str | None = None
    classes: str | None = None
    units: tuple[str, ...] = ()
    numbers: tuple[tuple[tuple[str, ...], str], ...] = ()
    run_dir: str | None = None
    run_dir_use: str = "new"
    resume: bool = False
    overrides: dict = dataclasses.field(default_factory=dict)
    not_applicable: dict = dataclasses.field(default_factory=dict)

    def slots(self) -> dict[str, tuple[str, ...]]:
        """The arguments of a valid call, by slot, in order."""
        slots: dict[str, tuple[str, ...]] = {}
        for checkpoint in self.checkpoints:
            if checkpoint.required:
                value = GOOD_CHECKPOINT[checkpoint.form]
                slots[f"checkpoint:{checkpoint.flag}"] = (value,) if checkpoint.flag is None else (checkpoint.flag, value)
        if self.model:
            slots["model"] = (self.model, "digits_cnn")
        if self.data:
            slots["data"] = (self.data, "digits")
        if self.run_dir:
            slots["run_dir"] = (self.run_dir, "{tmp}/finished" if self.run_dir_use == "read" else "{tmp}/new/{verb}")
        return slots

    def argv(self, replace: dict[str, tuple[str, ...]] | None = None, extra: tuple[str, ...] = (),
             prefix: tuple[str, ...] = ()) -> tuple[str, ...]:
        slots = {**self.slots(), **(replace or {})}
        return (*prefix, self.name, *(a for arguments in slots.values() for a in arguments), *self.call, *extra)


COMMON_NUMBERS = {
    "batch": (("--batch-size", "0"), "--batch-size must be at least 1"),
    "threads": (("--threads", "0"), "--threads must be at least 1"),
    "val": (("--val-fraction", "1.5"), "fraction must be in [0, 1)"),
}


def _numbers(*common: str, extra=()) -> tuple:
    return tuple(COMMON_NUMBERS[name] for name in common) + tuple(extra)


NO_CHECKPOINT = "reads no checkpoint"
NO_RUN_DIR = "writes no run directory (it prints its result)"
NO_CLASSES = "takes no class names"
NO_UNITS = "takes no unit names"
NO_DATA = "reads no data set"
RUN_DIR_KINDS = ("run dir is a file", "run dir below a file", "run dir holds another run", "run dir read-only",
                 "run dir on /proc", "run dir to read or resume is missing")

# One entry per verb of the CLI; a verb added later joins the sweep with its own entry here.
SWEEP = [
    Verb("demo", call=("--epochs", "1", "--decouple-epochs", "0", "--threads", "1", "--quiet"),
         model="--model", checkpoints=(Checkpoint("--weights", "plain", required=False),), data="--data",
         numbers=_numbers("threads", extra=((("--epochs", "0"), "--epochs must be at least 1"),
                                            (("--decouple-epochs", "-1"), "--decouple-epochs must be at least 0"))),
         run_dir="--run-dir", not_applicable={
             "unknown class": NO_CLASSES, "unknown unit": NO_UNITS, "required input left out": "every input has a default",
             "run dir to read or resume is missing": "has no --resume"}),
    Verb("train", call=("--epochs", "1", "--batch-size", "64", "--max-steps-per-epoch", "1", "--threads", "1", "--quiet"),
         model="--model", checkpoints=(Checkpoint("--weights", "plain", required=False),), data="--data",
         numbers=_numbers("batch", "threads", "val", extra=(
             (("--epochs", "0"), "epochs must be at least 1"), (("--lr", "0"), "learning rate must be positive"),
             (("--workers", "-1"), "workers must be at least 0"),
             (("--max-steps-per-epoch", "0"), "max steps per epoch must be at least 1"),
             (("--num-classes", "0"), "num classes must be at least 1"))),
         run_dir="--run-dir", resume=True, not_applicable={"unknown class": "trains on every class", "unknown unit": NO_UNITS}),
    Verb("decouple", call=("--epochs", "1", "--set", "path_finetune_epochs=0", "--set", "max_steps_per_epoch=1",
                           "--threads", "1", "--quiet"),
         model="--model", checkpoints=(Checkpoint("--weights", "plain", required=False),
                                       Checkpoint("--teacher-weights", "plain", required=False,
                                                  needs=("--set", "distill_weight=1"))),
         data="--data", units=("--include", "--exclude"),
         numbers=_numbers("batch", "threads", extra=(
             (("--epochs", "0"), "epochs must be at least 1"), (("--lr", "0"), "learning rate must be positive"),
             (("--sparsity-ratio", "1.5"), "sparsity ratio R must be in [0, 1]"),
             (("--lambda-mi", "-1"), "lambda_mi must be >= 0"),
             (("--flops-target", "0.5"), "FLOPs target must be a reduction above 1"),
             (("--set", "val_fraction=1.5"), "val fraction must be in [0, 1)"),
             (("--set", "path_finetune_epochs=20"), "leaves none of the 1 epochs to train the gates"))),
         run_dir="--run-dir", resume=True, not_applicable={"unknown class": "decouples for every class"}),
    Verb("eval", call=("--threads", "1", "--quiet"), model="--model", checkpoints=(Checkpoint("--weights", "plain", required=False),),
         data="--data", numbers=_numbers("batch", "threads", "val"),
         not_applicable={"unknown class": "evaluates every class", "unknown unit": NO_UNITS,
                         **{kind: NO_RUN_DIR for kind in RUN_DIR_KINDS}}),
    Verb("paths", call=("--threads", "1", "--quiet"), checkpoints=(Checkpoint("--weights", "decoupled"),), data="--data",
         numbers=_numbers("batch", "threads", "val"), run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown model": "the model is read from the checkpoint", "unknown class": "records every class",
                         "unknown unit": NO_UNITS, "run dir to read or resume is missing": "has no --resume"}),
    Verb("units", model="--model", numbers=((("--num-classes", "0"), "num_classes must be at least 1"),),
         not_applicable={"checkpoint missing": NO_CHECKPOINT, "checkpoint empty": NO_CHECKPOINT,
                         "checkpoint corrupt": NO_CHECKPOINT, "checkpoint of another architecture": NO_CHECKPOINT,
                         "data missing": NO_DATA, "data truncated": NO_DATA, "data of the wrong layout": NO_DATA,
                         "unknown class": NO_CLASSES, "unknown unit": "lists every unit",
                         **{kind: NO_RUN_DIR for kind in RUN_DIR_KINDS}}),
    Verb("models", not_applicable={
        **{kind: "takes no input (it lists the registered models)" for kind in (
            "checkpoint missing", "checkpoint empty", "checkpoint corrupt", "checkpoint of another architecture", "data missing",
            "data truncated", "data of the wrong layout", "unknown model", "unknown class", "unknown unit",
            "out-of-range number", "required input left out", *RUN_DIR_KINDS)}}),
    Verb("influence", call=("--threads", "1", "--quiet"), model="--model", checkpoints=(Checkpoint("--weights", "plain", required=False),),
         data="--data", units=("--at",),
         numbers=_numbers("batch", "threads", "val", extra=((("--k1", "0"), "k1 must be a positive integer"),
                                                             (("--k2", "0"), "k2 must be a positive integer"))),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown class": "finds the features of every class",
                         "run dir to read or resume is missing": "has no --resume"}),
    Verb("semantic-prune", call=("--threads", "1", "--quiet"), model="--model",
         checkpoints=(Checkpoint("--weights", "plain", required=False),), data="--data", classes="--classes", units=("--exclude",),
         numbers=_numbers("batch", "threads", "val", extra=((("--ratios", "1.5"), "pruning ratio must be a number in [0, 1]"),
                                                             (("--masks-per-pass", "0"), "masks_per_pass must be at least 1"))),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"run dir to read or resume is missing": "has no --resume"}),
    Verb("bench", call=("--inputs", "2", "--repeats", "1", "--calibration", "8", "--routes", "stock", "--quiet"),
         checkpoints=(Checkpoint("--weights", "decoupled"), Checkpoint("--dense-weights", "plain", required=False),
                      Checkpoint("--pruned", "pruned", required=False)),
         data="--data", numbers=_numbers("batch", "threads", extra=(
             (("--inputs", "0"), "--inputs must be at least 1"), (("--repeats", "0"), "--repeats must be at least 1"),
             (("--calibration", "0"), "--calibration must be at least 1"),
             (("--throughput-threads", "0"), "--throughput-threads must be at least 1"))),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown model": "the model is read from the checkpoint", "unknown class": "times every class",
                         "unknown unit": NO_UNITS, "run dir to read or resume is missing": "has no --resume"}),
    Verb("embed", call=("--samples", "40", "--threads", "1", "--quiet"),
         checkpoints=(Checkpoint("--weights", "decoupled"), Checkpoint("--dense-weights", "plain", required=False)),
         data="--data", numbers=_numbers("batch", "threads", "val", extra=((("--samples", "0"), "--samples"),)),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown model": "the model is read from the checkpoint", "unknown class": "embeds every class",
                         "unknown unit": NO_UNITS, "run dir to read or resume is missing": "has no --resume"}),
    Verb("tree", call=("--samples", "60", "--threads", "1", "--quiet"), checkpoints=(Checkpoint("--weights", "decoupled"),),
         data="--data", numbers=_numbers("batch", "threads", "val", extra=((("--threshold", "1.5"), "the Hopkins threshold must be in (0, 1)"),)),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown model": "the model is read from the checkpoint", "unknown class": "splits every class",
                         "unknown unit": NO_UNITS, "run dir to read or resume is missing": "has no --resume"}),
    Verb("occlude", call=("--box", "2", "2", "6", "6", "--images", "4", "--threads", "1", "--quiet"),
         checkpoints=(Checkpoint("--weights", "decoupled"),), data="--data",
         numbers=_numbers("batch", "threads", "val", extra=((("--quantile", "1.5"), "the quantile must lie in (0, 1)"),)),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown model": "the model is read from the checkpoint", "unknown class": "occludes every class",
                         "unknown unit": NO_UNITS, "run dir to read or resume is missing": "has no --resume"}),
    Verb("dissect", call=("--images", "8", "--threads", "1", "--quiet"), checkpoints=(Checkpoint("--weights", "decoupled"),),
         data="--data", numbers=_numbers("batch", "threads", "val", extra=((("--quantile", "1.5"), "the quantile must lie in (0, 1)"),)),
         run_dir="--run-dir", run_dir_use="analysis",
         overrides={"required input left out": [("--data", "data", (), "pass --data"),
                                                ("--weights", "checkpoint:--weights", (), "required")]},
         not_applicable={"unknown model": "the model is read from the checkpoint (--model names the base of a plain one)",
                         "unknown class": "dissects every class", "unknown unit": NO_UNITS,
                         "run dir to read or resume is missing": "has no --resume"}),
    Verb("adversarial", call=("--attack", "fgsm", "--features", "path", "--classifiers", "random_forest", "--n", "1",
                              "--runs", "1", "--pool-per-class", "2", "--test-per-class", "2", "--no-pair",
                              "--threads", "1", "--quiet"),
         checkpoints=(Checkpoint("--weights", "decoupled"),), data="--data",
         numbers=_numbers("threads", extra=((("--batch-size", "0"), "batch size must be at least 1"),
                                            (("--eps", "-1"), "is outside (0, 1]"))),
         run_dir="--run-dir", run_dir_use="analysis",
         not_applicable={"unknown model": "the model is read from the checkpoint",
                         "unknown class": "attacks every class (the Fig. 10 pair is switched off in the sweep's calls)",
                         "unknown unit": NO_UNITS, "run dir to read or resume is missing": "has no --resume"}),
    Verb("report", run_dir="--run-dir", run_dir_use="read",
         overrides={
             "data missing": [("run directory", "run_dir", ("--run-dir", "{tmp}/no_such_run"), "does not exist")],
             "data truncated": [("metrics.json cut short", "run_dir", ("--run-dir", "{tmp}/truncated_run"), "is not valid JSON")],
             "data of the wrong layout": [("a folder that holds no run", "run_dir", ("--run-dir", "{tmp}/empty_folder"),
                                           "is not a run directory")],
             "run dir below a file": [("", "run_dir", ("--run-dir", "{tmp}/a_file/run"), "does not exist")],
             "required input left out": [("the run directory", "run_dir", (), "give the run directory")],
         },
         not_applicable={"checkpoint missing": NO_CHECKPOINT, "checkpoint empty": NO_CHECKPOINT,
                         "checkpoint corrupt": NO_CHECKPOINT, "checkpoint of another architecture": NO_CHECKPOINT,
                         "unknown model": "reads what the run recorded", "unknown class": NO_CLASSES, "unknown unit": NO_UNITS,
                         "out-of-range number": "takes no numbers",
                         "run dir holds another run": "it rewrites the run's report.html, by design",
                         "run dir on /proc": "reads an existing run (see 'data missing')",
                         "run dir to read or resume is missing": "see 'data missing': report's data is the run directory"}),
]


# ---------------------------------------------------------------------------------------------------------
# The kinds of bad input, each turned into cases of every verb it applies to.

@dataclasses.dataclass(frozen=True)
class Case:
    verb: str
    kind: str
    variant: str
    argv: tuple[str, ...]
    expect: str  # what the one line on stderr must say

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9=.,+-]+", "_", "-".join(p for p in (self.verb, self.kind, self.variant) if p))


BAD_CHECKPOINT = {"checkpoint missing": ("{tmp}/missing.pt", "does not exist"),
                  "checkpoint empty": ("{tmp}/empty.pt", "cannot read checkpoint"),
                  "checkpoint corrupt": ("{tmp}/corrupt.pt", "cannot read checkpoint")}
OTHER_ARCHITECTURE = {"plain": "{tmp}/resnet20.pt", "decoupled": "{tmp}/decoupled_as_resnet20.pt",
                      "pruned": "{tmp}/pruned_as_resnet20.pt"}
BAD_DATA = {"data missing": ("{tmp}/nowhere.zip", "is neither a registered data set"),
            "data truncated": ("{tmp}/truncated.zip", "is neither a folder nor a readable .zip file"),
            "data of the wrong layout": ("{tmp}/no_splits.zip", "has no split folder named")}


def _checkpoint_cases(kind: str):
    def cases(verb: Verb):
        for checkpoint in verb.checkpoints:
            if kind == "checkpoint of another architecture":
                value, expect = OTHER_ARCHITECTURE[checkpoint.form], "does not fit this model"
            else:
                value, expect = BAD_CHECKPOINT[kind]
            if kind == "checkpoint missing" and checkpoint.flag:
                expect = f"does not exist; check the {checkpoint.flag} path"  # the flag that named it
            slot = f"checkpoint:{checkpoint.flag}"
            arguments = (value,) if checkpoint.flag is None else (checkpoint.flag, value)
            yield checkpoint.flag or "positional", {slot: arguments}, checkpoint.needs, expect
    return cases


def _data_cases(kind: str):
    def cases(verb: Verb):
        if verb.data:
            value, expect = BAD_DATA[kind]
            yield "", {"data": (verb.data, value)}, (), expect
    return cases


def _unknown_model(verb: Verb):
    if verb.model:
        yield "", {"model": (verb.model, "resnet1000")}, (), "'resnet1000'"


def _unknown_class(verb: Verb):
    if verb.classes:
        yield verb.classes, {}, (verb.classes, "kitten"), "unknown class 'kitten'"


def _unknown_unit(verb: Verb):
    for flag in verb.units:
        yield flag, {}, (flag, "conv9"), "conv9"


def _numbers_out_of_range(verb: Verb):
    for arguments, expect in verb.numbers:
        yield " ".join(arguments), {}, arguments, expect


def _left_out(verb: Verb):
    """Each input a valid call needs, left out."""
    for slot in verb.slots():
        if slot == "run_dir" and verb.run_dir_use != "read":
            continue  # a run directory that is written has a default or is optional
        yield slot.replace("checkpoint:", "").replace("None", "checkpoint"), {slot: ()}, (), "required"


def _run_dir(value: str, expect: str, *, uses=("new", "analysis"), extra=()):
    def cases(verb: Verb):
        if verb.run_dir and verb.run_dir_use in uses:
            yield "", {"run_dir": (verb.run_dir, value)}, extra, expect
    return cases


def _holds_another_run(verb: Verb):
    if verb.run_dir and verb.run_dir_use in ("new", "analysis"):
        yield "", {"run_dir": (verb.run_dir, "{tmp}/finished")}, (), "already holds a"


def _run_dir_missing(verb: Verb):
    if verb.run_dir and verb.resume:
        yield "--resume", {"run_dir": (verb.run_dir, "{tmp}/typo")}, ("--resume",), "holds no checkpoints/last.pt to resume"


def _read_only(verb: Verb):
    if verb.run_dir:
        value = "{tmp}/readonly" if verb.run_dir_use == "read" else "{tmp}/readonly/run"
        yield "", {"run_dir": (verb.run_dir, value)}, (), "cannot be written"


def _plugin_syntax_error(verb: Verb):
    yield "", {}, (), "SyntaxError"


# kind → the cases it makes of one verb, each (variant, the slots it replaces, arguments it adds, what the one line must say)
KINDS = {
    "checkpoint missing": _checkpoint_cases("checkpoint missing"),
    "checkpoint empty": _checkpoint_cases("checkpoint empty"),
    "checkpoint corrupt": _checkpoint_cases("checkpoint corrupt"),
    "checkpoint of another architecture": _checkpoint_cases("checkpoint of another architecture"),
    "data missing": _data_cases("data missing"),
    "data truncated": _data_cases("data truncated"),
    "data of the wrong layout": _data_cases("data of the wrong layout"),
    "unknown model": _unknown_model,
    "unknown class": _unknown_class,
    "unknown unit": _unknown_unit,
    "out-of-range number": _numbers_out_of_range,
    "required input left out": _left_out,
    "run dir is a file": _run_dir("{tmp}/a_file", "is a file", uses=("new", "analysis", "read")),
    "run dir below a file": _run_dir("{tmp}/a_file/run", "is a file"),
    "run dir holds another run": _holds_another_run,
    "run dir read-only": _read_only,
    "run dir on /proc": _run_dir(PROC_RUN_DIR, "cannot be written"),
    "run dir to read or resume is missing": _run_dir_missing,
    "plugin with a syntax error": _plugin_syntax_error,
}
PLUGIN_PREFIX = ("--plugin", "{tmp}/syntax_error_plugin.py")


def sweep() -> tuple[list[Case], dict[tuple[str, str], str], list[str]]:
    """(the cases, (verb, kind) → why it does not apply, the (verb, kind) pairs left unanswered)."""
    cases, not_applicable, unanswered = [], {}, []
    for verb in SWEEP:
        for kind, make in KINDS.items():
            if kind in verb.not_applicable:
                not_applicable[verb.name, kind] = verb.not_applicable[kind]
                continue
            if kind in verb.overrides:
                made = [(variant, {slot: arguments}, (), expect) for variant, slot, arguments, expect in verb.overrides[kind]]
            else:
                made = list(make(verb))
            if not made:
                unanswered.append(f"{verb.name} × {kind}")
            prefix = PLUGIN_PREFIX if kind == "plugin with a syntax error" else ()
            for variant, replace, extra, expect in made:
                argv = tuple(a.replace("{verb}", verb.name) for a in verb.argv(replace, extra, prefix))
                cases.append(Case(verb.name, kind, variant, argv, expect))
    return cases, not_applicable, unanswered


CASES, NOT_APPLICABLE, UNANSWERED = sweep()


# ---------------------------------------------------------------------------------------------------------
# The sandbox: every input the cases name, written once.

def build_sandbox(root: Path, finished_run: Path) -> str | None:
    """Write every input of the sweep into ``root``; None, or why the read-only folder could not be made."""
    import json
    import zipfile

    import torch

    from filterscope.models import create_model
    from test_cli import write_image_zip

    (root / "corrupt.pt").write_bytes(b"these bytes are no checkpoint" * 10)
    (root / "empty.pt").write_bytes(b"")
    torch.save(create_model("digits_cnn", 10).state_dict(), root / "digits_cnn.pt")
    resnet20 = create_model("resnet20", 10).state_dict()
    torch.save(resnet20, root / "resnet20.pt")
    shutil.copy(DECOUPLED_FIXTURE, root / "decoupled.pt")
    decoupled = torch.load(DECOUPLED_FIXTURE, weights_only=True)
    torch.save({**decoupled, "model_name": "resnet20", "base_model": "resnet20", "input_shape": [3, 32, 32]},
               root / "decoupled_as_resnet20.pt")
    torch.save({"format": "filterscope.pruned.v1", "model": "digits_cnn", "num_classes": 10, "channels": {},
                "state_dict": resnet20}, root / "pruned_as_resnet20.pt")
    images = root / "images"
    images.mkdir()
    write_image_zip(images / "whole.zip")
    (root / "truncated.zip").write_bytes((images / "whole.zip").read_bytes()[:200])
    with zipfile.ZipFile(root / "no_splits.zip", "w") as archive:
        archive.writestr("images/a/0.png", (images / "train_a_0.png").read_bytes())
    (root / "syntax_error_plugin.py").write_text("def broken(:\n")
    (root / "a_file").write_text("not a folder")
    (root / "empty_folder").mkdir()
    (root / "new").mkdir()  # the valid calls' run directories go below it (and are never created)

    finished = root / "finished"
    shutil.copytree(finished_run, finished)
    metrics = json.loads((finished / "metrics.json").read_text())
    for analysis in ("influence", "semantic_pruning", "bench", "paths_test", "path_embedding", "path_tree", "occlusion",
                     "dissection", "adversarial"):  # stand-ins of earlier analyses
        metrics[analysis] = {"recorded by": "an earlier run of the verb"}
    (finished / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    truncated_run = root / "truncated_run"
    truncated_run.mkdir()
    (truncated_run / "config.yaml").write_text("model: digits_cnn\n")
    (truncated_run / "metrics.json").write_text((finished / "metrics.json").read_text()[:40])
    readonly = root / "readonly"
    shutil.copytree(finished, readonly, ignore=shutil.ignore_patterns("checkpoints", "report.html"))
    return make_read_only(readonly)


def train_finished_run(run: Path) -> Path:
    assert main(["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                 "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    return run


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file (its SHA-256) and folder below ``folder``."""
    return {str(p.relative_to(folder)): "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def _remove_new(root: Path, before: dict[str, str], after: dict[str, str]) -> None:
    for name in sorted(set(after) - set(before), reverse=True):  # files before the folders they are in
        path = root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def run_case(case: Case, sandbox: Path) -> tuple[int, str, str, float]:
    """Run one case in ``sandbox`` (the working directory, so that a default run directory lands there):
    (exit code, stdout, stderr with each warning as a line of its own, CPU seconds)."""
    argv = [a.replace("{tmp}", str(sandbox)) for a in case.argv]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    previous = Path.cwd()
    os.chdir(sandbox)
    start = time.process_time()
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's own errors (an unknown choice) exit from parse_args
                code = stop.code
    finally:
        seconds = time.process_time() - start
        os.chdir(previous)
    texts = []
    for stream in (out, err):
        stream.flush()
        texts.append(stream.buffer.getvalue().decode("utf-8"))
    stderr = texts[1] + "".join(f"warning: {w.category.__name__}: {w.message}\n" for w in caught)
    return code, texts[0], stderr, seconds


# ---------------------------------------------------------------------------------------------------------
# The tests.

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch digits run, trained once for the module."""
    return train_finished_run(tmp_path_factory.mktemp("finished") / "run")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, finished_run):
    root = tmp_path_factory.mktemp("sweep")
    why_not_read_only = build_sandbox(root, finished_run)
    yield root, why_not_read_only
    release_read_only(root / "readonly")


def test_every_verb_answers_every_kind():
    """Each verb of the CLI is in the sweep, and each kind of bad input either makes cases for it or is
    named not applicable with the reason (a verb added to the CLI fails here until it has its entry)."""
    assert sorted(verb.name for verb in SWEEP) == sorted(VERBS)
    assert not UNANSWERED, f"neither cases nor a reason why not: {UNANSWERED}"
    for verb in SWEEP:
        assert set(verb.not_applicable) <= set(KINDS), set(verb.not_applicable) - set(KINDS)
        assert set(verb.overrides) <= set(KINDS), set(verb.overrides) - set(KINDS)
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_fast_and_writes_nothing(case, sandbox):
    root, why_not_read_only = sandbox
    if case.kind == "run dir read-only" and why_not_read_only:
        pytest.skip(f"no read-only folder here: {why_not_read_only}")
    before = fingerprint(root)
    code, out, err, seconds = run_case(case, root)
    after = fingerprint(root)
    _remove_new(root, before, after)  # a failing case leaves the next ones a clean sandbox
    lines = err.strip().splitlines()
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-2000:]}"
    assert case.expect in lines[0], lines[0]
    assert seconds < CPU_SECONDS, f"{seconds:.2f} s of CPU before the error"
    new = sorted(set(after) - set(before))
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not new and not changed, f"new: {new}; changed or removed: {changed}"
    assert not Path(PROC_RUN_DIR).exists()


@pytest.mark.slow
@pytest.mark.parametrize("verb", SWEEP, ids=[verb.name for verb in SWEEP])
def test_the_sweeps_calls_are_valid_without_the_bad_input(verb, finished_run, tmp_path):
    """Each verb's call in the table succeeds as it stands: every case fails for its bad input alone
    (slow: bench and semantic-prune run for a minute)."""
    root = tmp_path / "sweep"
    root.mkdir()
    build_sandbox(root, finished_run)
    try:
        argv = tuple(a.replace("{verb}", verb.name) for a in verb.argv())
        code, _, err, _ = run_case(Case(verb.name, "none", "", argv, ""), root)
    finally:
        release_read_only(root / "readonly")
    assert code == 0, err


def test_a_finished_run_is_continued_with_resume_and_replaced_with_overwrite(finished_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    code, out, err = run_cli("train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                             "--threads", "1", "--quiet", "--resume", "--run-dir", run, capsys=capsys)
    assert code == 0, err
    assert "report: " in err and (run / "report.html").exists()
    code, _, err = run_cli("train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                           "--threads", "1", "--quiet", "--overwrite", "--run-dir", run, capsys=capsys)
    assert code == 0, err


@pytest.mark.shared
@pytest.mark.skipif(not (R20.exists() and CIFAR.exists()), reason="needs the shared ResNet-20 and CIFAR-10 JPEG zip")
def test_on_cifar_a_missing_checkpoint_fails_before_the_data_is_decoded(tmp_path, capsys):
    for verb in ("eval", "influence", "semantic-prune"):
        start = time.process_time()
        code, _, err = run_cli(verb, "--model", "resnet20", "--weights", tmp_path / "missing.pt", "--data", CIFAR, capsys=capsys)
        assert_one_clear_error(code, err, "does not exist")
        assert time.process_time() - start < CPU_SECONDS, verb
    start = time.process_time()  # an unknown class: found from the zip's folder names, not after 50,000 images
    code, _, err = run_cli("semantic-prune", "--model", "resnet20", "--weights", R20, "--data", CIFAR, "--classes", "kitten",
                           capsys=capsys)
    assert_one_clear_error(code, err, "unknown class 'kitten'")
    assert time.process_time() - start < CPU_SECONDS
    for verb in ("train", "decouple"):  # a checkpoint of another architecture: built against the zip's class count
        start = time.process_time()
        code, _, err = run_cli(verb, "--model", "resnet56", "--weights", R20, "--data", CIFAR, "--epochs", "30",
                               "--run-dir", tmp_path / verb, capsys=capsys)
        assert_one_clear_error(code, err, "does not fit this model")
        assert time.process_time() - start < CPU_SECONDS, verb
        assert not (tmp_path / verb).exists()


def test_version_and_the_units_table(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("filterscope ")
    code, out, _ = run_cli("units", "--model", "resnet20", capsys=capsys)
    header, first = out.splitlines()[:2]
    assert code == 0 and "FLOPs" in header and "params" in header
    assert "884,736" in first and "464" in first  # conv1: 3x3x3x16 at 32x32, 432 weights + 32 BatchNorm
    assert "81,102,080" in out.splitlines()[-1]


def test_log_writes_every_step_and_epoch_as_json_lines_and_epoch_lines_survive_no_progress(tmp_path, capsys):
    import json

    code, _, err = run_cli("train", "--model", "digits_cnn", "--data", "digits", "--epochs", "2", "--batch-size", "256",
                           "--threads", "1", "--no-progress", "--log", tmp_path / "log.jsonl", "--run-dir", tmp_path / "run",
                           capsys=capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    per_epoch = [sum(r["epoch"] == e for r in steps) for e in (1, 2)]
    assert [r["epoch"] for r in epochs] == [1, 2] and per_epoch[0] == per_epoch[1] >= 5  # ~1,400 images at 256 a step
    assert all(set(r) >= {"epoch", "step", "lr", "loss", "accuracy"} for r in steps)
    assert "epoch 1/2: " in err and "epoch 2/2: " in err  # one plain line per epoch without progress bars


# ---------------------------------------------------------------------------------------------------------
# docs/cli-errors.md, from the cases above.

def _shown(text: str, root: Path) -> str:
    return text.replace(str(root), "…").replace("|", "\\|")


def write_table(path: Path) -> None:
    """docs/cli-errors.md: the verb × kind matrix, then every case with the line the CLI prints."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "sweep"
        root.mkdir()
        why_not_read_only = build_sandbox(root, train_finished_run(Path(folder) / "trained"))
        try:
            messages = {}
            for case in CASES:
                if case.kind == "run dir read-only" and why_not_read_only:
                    messages[case.id] = f"(not run here: {why_not_read_only})"
                    continue
                code, _, err, _ = run_case(case, root)
                lines = err.strip().splitlines() or [""]
                messages[case.id] = lines[-1] if code == 2 and len(lines) == 1 else f"FAILS THE SWEEP (exit {code}): {lines[-1]}"
        finally:
            release_read_only(root / "readonly")
        kinds = list(KINDS)
        out = ["# What the CLI says to bad input", "",
               "Generated by `python tests/test_cli_safety.py` from the sweep in `tests/test_cli_safety.py`: every verb × "
               "every kind of bad input. Each case exits with code 2 and one line on stderr, without a traceback, in under "
               f"{CPU_SECONDS:.0f} s of CPU time, and leaves its run directory, that folder's parent and an earlier run "
               "byte-identical. The read-only run directory is made unwritable with `chmod a-w` or, as root (who ignores "
               "permission bits), with `chattr +i`; the run directory on /proc (which refuses new entries to root too) "
               "and the one below a regular file hold for any user. `…` stands for the folder the sweep's inputs are in.",
               "", f"{len(CASES)} cases; n/a: the kind does not apply to the verb (the reason is in the verb's table).", "",
               "## Cases per verb and kind", "", "| kind | " + " | ".join(verb.name for verb in SWEEP) + " |",
               "|---|" + "---|" * len(SWEEP)]
        for kind in kinds:
            cells = []
            for verb in SWEEP:
                count = sum(case.verb == verb.name and case.kind == kind for case in CASES)
                cells.append("n/a" if (verb.name, kind) in NOT_APPLICABLE else str(count))
            out.append(f"| {kind} | " + " | ".join(cells) + " |")
        for verb in SWEEP:
            out += ["", f"## filterscope {verb.name}", "", "| kind | command | what filterscope says (exit code 2) |",
                    "|---|---|---|"]
            for kind in kinds:
                if (verb.name, kind) in NOT_APPLICABLE:
                    out.append(f"| {kind} | n/a | {NOT_APPLICABLE[verb.name, kind]} |")
                    continue
                for case in (c for c in CASES if c.verb == verb.name and c.kind == kind):
                    command = " ".join(a.replace("{tmp}", str(root)) for a in case.argv)
                    label = f"{kind} ({case.variant})" if case.variant else kind
                    out.append(f"| {label} | `filterscope {_shown(command, root)}` | {_shown(messages[case.id], root)} |")
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    write_table(Path(__file__).resolve().parents[1] / "docs" / "cli-errors.md")
