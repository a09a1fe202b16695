import os
import stat

import pytest

from filterscope import RunDir
from filterscope import build_report
from filterscope.core.atomic import atomic_file
from filterscope.cli import main
from filterscope.report.figures import plt, save_figure


def small_run(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config({"model": "digits_cnn", "note": "<b>not markup</b>"})
    run.update_metrics("train", {"final": {"accuracy": 0.9375, "epochs": 3}, "history": [
        {"epoch": 1, "train_ce": 0.5, "test_accuracy": 0.8}, {"epoch": 2, "train_ce": 0.25, "test_accuracy": 0.9},
    ]})
    run.update_metrics("paths", {"widths": list(range(40)), "names": ["conv1", "conv2"], "per_epoch": [
        {"epoch": 1, "loss": 0.5, "per_layer": {"a": 1}}, {"epoch": 2, "loss": 0.25, "lr": 0.01}]})
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    save_figure(figure, run.figures / "curve.png")
    (run.arrays / "paths_test.npz").write_bytes(b"x" * 10)
    return run


def test_report_shows_every_analysis_the_history_figures_and_config(tmp_path):
    run = small_run(tmp_path)
    page = build_report(run.path).read_text()
    assert page.startswith("<!DOCTYPE html>")
    # a known analysis gets its section (heading, explanation, its own table and the curves drawn from its history)
    assert '<section id="training">\n<h2>Training</h2>' in page and '<p class="intro">How the dense network' in page
    assert "<td>top-1</td><td class=\"number\">0.9375</td>" in page
    assert '<img src="figures/training_curves.png" alt="Training loss' in page
    assert (run.path / "figures" / "training_curves.png").stat().st_size > 1000
    # what no section describes is still shown, generically: scalars as rows, records as a table
    assert '<section id="other">\n<h2>Other results</h2>' in page and "<h3>paths</h3>" in page
    assert "<tr><th>epoch</th><th>loss</th><th>lr</th></tr>" in page and "per_layer" not in page
    assert "40 values, min 0, max 39" in page and "conv1, conv2" in page
    assert '<img src="figures/curve.png" alt="Figure curve."' in page and "arrays/paths_test.npz" in page
    assert page.index("<h2>Training</h2>") < page.index("<h2>Other results</h2>") < page.index("<h2>Configuration</h2>")
    assert "&lt;b&gt;not markup&lt;/b&gt;" in page and "<b>not markup</b>" not in page


def test_report_of_a_folder_that_is_not_a_run_is_one_sentence_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert "not a run directory" in error and "--run-dir" in error and error.count("\n") == 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    assert main(["report", str(tmp_path / "broken")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "broken" / "report.html").exists()


def test_report_verb_writes_report_html(tmp_path, capsys):
    run = small_run(tmp_path)
    assert main(["report", str(run.path)]) == 0
    assert (run.path / "report.html").exists() and "report.html" in capsys.readouterr().out


def test_atomic_file_keeps_the_old_file_when_a_write_fails_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with atomic_file(target, binary=False) as stream:
        stream.write("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, binary=False) as stream:
            stream.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(target.parent) == ["metrics.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable by whoever the run directory is shared with
