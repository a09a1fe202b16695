"""Run directories never lose work: check_run_dir refuses, before any computation, what would."""

from __future__ import annotations

import json
import os

import pytest

from filterscope.core.errors import UserInputError
from filterscope.io.run_dir import RunDir, check_run_dir

from conftest import make_read_only, release_read_only


def _finished_run(path):
    (path / "checkpoints").mkdir(parents=True)
    (path / "checkpoints" / "last.pt").write_bytes(b"weights")
    (path / "config.yaml").write_text("epochs: 8\n")
    return path


def test_a_new_or_missing_folder_is_accepted_and_not_created(tmp_path):
    assert check_run_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()
    assert check_run_dir(None) is None


def test_a_file_is_refused_with_one_sentence(tmp_path):
    (tmp_path / "x").write_text("not a folder")
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        check_run_dir(tmp_path / "x")


def test_a_finished_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    run = _finished_run(tmp_path / "run")
    with pytest.raises(UserInputError, match="--resume to continue it, --overwrite to replace it"):
        check_run_dir(run)
    assert check_run_dir(run, resume=True) == run
    assert check_run_dir(run, overwrite=True) == run
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"weights"  # checking never touches the files


def test_resume_needs_a_checkpoint_to_resume(tmp_path):
    with pytest.raises(UserInputError, match="holds no checkpoints/last.pt to resume"):
        check_run_dir(tmp_path / "typo", resume=True)
    with pytest.raises(UserInputError, match="contradict"):
        check_run_dir(_finished_run(tmp_path / "run"), resume=True, overwrite=True)


def test_an_analysis_may_join_a_run_but_not_replace_its_own_results(tmp_path):
    run = _finished_run(tmp_path / "run")
    RunDir(run).update_metrics("train", {"accuracy": 0.9})
    assert check_run_dir(run, analysis="influence") == run
    RunDir(run).update_metrics("influence", {"accuracy_full": 0.8})
    with pytest.raises(UserInputError, match="already holds a 'influence' analysis"):
        check_run_dir(run, analysis="influence")
    assert check_run_dir(run, analysis="influence", overwrite=True) == run
    assert json.loads((run / "metrics.json").read_text())["influence"] == {"accuracy_full": 0.8}


def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    why_not = make_read_only(folder)  # chmod a-w, or chattr +i as root
    if why_not:
        pytest.skip(why_not)
    try:
        with pytest.raises(UserInputError, match="cannot be written"):
            check_run_dir(folder / "run")
        with pytest.raises(UserInputError, match="cannot be written"):
            check_run_dir(folder)
    finally:
        release_read_only(folder)
    assert list(folder.iterdir()) == []


def test_folders_no_one_can_write_are_refused_whoever_asks(tmp_path):
    """Root ignores permission bits, and os.access says yes to root for /proc: the check creates a nameless
    file to know, and a path below a regular file is refused for what it is."""
    with pytest.raises(UserInputError, match="cannot be written"):
        check_run_dir("/proc/filterscope-test/run")
    assert not os.path.exists("/proc/filterscope-test")
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserInputError, match="'.*a_file' is a file, not a folder"):
        check_run_dir(tmp_path / "a_file" / "deeper" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert check_run_dir(tmp_path / "fine" / "run") == tmp_path / "fine" / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # the check writes nothing that stays
