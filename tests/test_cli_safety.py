"""Never lose work, fail early: each defect the never-lose-work issue listed, reproduced and now refused.

Every bad input below ends with exit code 2, one sentence on stderr and no traceback, in under 2 s of
CPU time (process time: the bound holds on a busy machine too, and decoding the CIFAR training split alone
takes about 20 s of it),
and leaves an earlier run's files byte-identical. The table of cases is written into
docs/cli-errors.md by ``python tests/test_cli_safety.py`` (see ``write_table``).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from filterscope.cli import main
from filterscope.core.locations import shared_dir

from test_cli import assert_one_clear_error, run_cli

R20 = shared_dir() / "models" / "resnet20-12fca82f.th"
CIFAR = shared_dir() / "data" / "cifar10-jpeg.zip"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch digits run, trained once for the module."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--batch-size", "64",
                 "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    return run


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    """Broken inputs of every kind, written into ``tmp_path``."""
    import zipfile

    import torch

    from filterscope.models import create_model
    from test_cli import write_image_zip

    files = {"corrupt": tmp_path / "corrupt.pt", "empty": tmp_path / "empty.pt", "other_model": tmp_path / "resnet20.pt",
             "truncated": tmp_path / "truncated.zip", "no_splits": tmp_path / "no_splits.zip",
             "syntax": tmp_path / "syntax_error_plugin.py"}
    files["corrupt"].write_bytes(b"these bytes are no checkpoint" * 10)
    files["empty"].write_bytes(b"")
    torch.save(create_model("resnet20", 10).state_dict(), files["other_model"])
    write_image_zip(tmp_path / "whole.zip")
    files["truncated"].write_bytes((tmp_path / "whole.zip").read_bytes()[:200])
    with zipfile.ZipFile(files["no_splits"], "w") as archive:
        archive.writestr("images/a/0.png", (tmp_path / "train_a_0.png").read_bytes())
    files["syntax"].write_text("def broken(:\n")
    return files


def _cases(tmp_path: Path, run: Path) -> list[tuple[str, list[str], str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    digits = ["--model", "digits_cnn", "--data", "digits"]
    bad = _bad_files(tmp_path)
    return [
        ("eval corrupt checkpoint", ["eval", *digits, "--weights", bad["corrupt"]], "cannot read checkpoint"),
        ("eval empty checkpoint", ["eval", *digits, "--weights", bad["empty"]], "cannot read checkpoint"),
        ("eval checkpoint of another architecture", ["eval", *digits, "--weights", bad["other_model"]],
         "does not fit this model"),
        ("influence checkpoint of another architecture", ["influence", *digits, "--weights", bad["other_model"]],
         "does not fit this model"),
        ("eval missing data", ["eval", "--model", "digits_cnn", "--data", tmp_path / "nowhere.zip"], "nowhere.zip"),
        ("eval truncated zip", ["eval", "--model", "digits_cnn", "--data", bad["truncated"]], "truncated.zip"),
        ("eval zip without split folders", ["eval", "--model", "digits_cnn", "--data", bad["no_splits"]], "no_splits.zip"),
        ("unknown model", ["eval", "--model", "resnet1000", "--data", "digits"], "invalid choice: 'resnet1000'"),
        ("train without --model", ["train", "--data", "digits", "--run-dir", tmp_path / "no_model"], "--model is required"),
        ("decouple without --data", ["decouple", "--model", "digits_cnn", "--run-dir", tmp_path / "no_data"], "--data is required"),
        ("plugin with a syntax error", ["--plugin", bad["syntax"], "models"], "SyntaxError"),
        ("train into a finished run", ["train", *digits, "--epochs", "1", "--run-dir", run], "--resume to continue it"),
        ("decouple into a finished run", ["decouple", *digits, "--epochs", "1", "--run-dir", run], "--overwrite to replace it"),
        ("decouple shorter than its path fine-tuning", ["decouple", *digits, "--epochs", "10", "--run-dir", tmp_path / "short"],
         "leaves none of the 10 epochs to train the gates"),
        ("demo into a finished run", ["demo", "--run-dir", run], "already holds a run"),
        ("train --run-dir is a file", ["train", *digits, "--run-dir", a_file], "is a file, not a folder"),
        ("demo --run-dir is a file", ["demo", "--run-dir", a_file], "is a file, not a folder"),
        ("influence --run-dir is a file", ["influence", *digits, "--run-dir", a_file], "is a file, not a folder"),
        ("semantic-prune --run-dir is a file", ["semantic-prune", *digits, "--run-dir", a_file], "is a file, not a folder"),
        ("train --resume of a missing run", ["train", *digits, "--resume", "--run-dir", tmp_path / "typo"],
         "holds no checkpoints/last.pt to resume"),
        ("eval --batch-size 0", ["eval", *digits, "--batch-size", "0"], "--batch-size must be at least 1"),
        ("eval --threads 0", ["eval", *digits, "--threads", "0"], "--threads must be at least 1"),
        ("eval missing --weights file", ["eval", *digits, "--weights", tmp_path / "missing.pt"], "does not exist"),
        ("influence k2 out of range", ["influence", *digits, "--k2", "0"], "k2"),
        ("report of a file", ["report", a_file], "is a file"),
        ("semantic-prune unknown class", ["semantic-prune", *digits, "--classes", "kitten"], "unknown class 'kitten'"),
        ("influence --at names no unit", ["influence", *digits, "--at", "conv9"], "is not a unit of digits_cnn"),
        ("paths of a missing checkpoint", ["paths", tmp_path / "nothing.pt", "--data", "digits"], "does not exist"),
        ("embed of a network without gates", ["embed", "--weights", run / "checkpoints" / "last.pt", "--data", "digits"],
         "decouple it first"),
        ("tree --samples below --min-size", ["tree", "--weights", run / "checkpoints" / "last.pt", "--data", "digits",
                                             "--samples", "30"], "needs at least 50 images"),
        ("embed --run-dir is a file", ["embed", "--weights", run / "checkpoints" / "last.pt", "--data", "digits",
                                       "--run-dir", a_file], "is a file, not a folder"),
    ]


def test_every_bad_input_is_one_sentence_exit_2_fast_and_loses_nothing(finished_run, tmp_path, capsys):
    before = _fingerprint(finished_run)
    for name, arguments, fragment in _cases(tmp_path, finished_run):
        start = time.process_time()
        try:
            code, _, err = run_cli(*arguments, capsys=capsys)
        except SystemExit as stop:  # argparse's own errors (an unknown choice) exit from parse_args
            code, err = stop.code, capsys.readouterr().err
        seconds = time.process_time() - start
        assert_one_clear_error(code, err, fragment)
        assert seconds < 2.0, f"{name}: {seconds:.1f} s before the error"
        assert _fingerprint(finished_run) == before, f"{name} changed the earlier run"
    assert not (tmp_path / "typo").exists()


def test_a_finished_run_is_continued_with_resume_and_replaced_with_overwrite(finished_run, tmp_path, capsys):
    import shutil

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
        assert time.process_time() - start < 2.0, verb
    start = time.process_time()  # an unknown class: found from the zip's folder names, not after 50,000 images
    code, _, err = run_cli("semantic-prune", "--model", "resnet20", "--weights", R20, "--data", CIFAR, "--classes", "kitten",
                           capsys=capsys)
    assert_one_clear_error(code, err, "unknown class 'kitten'")
    assert time.process_time() - start < 2.0


def test_version_and_the_units_table(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("filterscope ")
    code, out, _ = run_cli("units", "--model", "resnet20", capsys=capsys)
    header, first = out.splitlines()[:2]
    assert code == 0 and "FLOPs" in header and "params" in header
    assert "884,736" in first and "464" in first  # conv1: 3x3x3x16 at 32x32, 432 weights + 32 BatchNorm
    assert "81,102,080" in out.splitlines()[-1]


def write_table(path: Path) -> None:
    """docs/cli-errors.md: every case of the sweep with the sentence the CLI prints."""
    import io
    import tempfile
    from contextlib import redirect_stderr

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "finished"
        main(["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--quiet", "--run-dir", str(run)])
        rows = ["| case | command | what filterscope says (exit code 2) |", "|---|---|---|"]
        for name, arguments, _ in _cases(Path(folder), run):
            stream = io.StringIO()
            with redirect_stderr(stream):
                try:
                    main([str(a) for a in arguments])
                except SystemExit:
                    pass
            message = stream.getvalue().strip().splitlines()[-1].replace(folder, "…")
            command = " ".join(str(a) for a in arguments).replace(folder, "…")
            rows.append(f"| {name} | `filterscope {command}` | {message} |")
    path.write_text("# What the CLI says to bad input\n\nGenerated by `python tests/test_cli_safety.py` from the cases "
                    "of `tests/test_cli_safety.py`.\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    write_table(Path(__file__).resolve().parents[1] / "docs" / "cli-errors.md")


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
