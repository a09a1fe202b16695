"""Calling the CLI in-process from a test, and the shape of its one-sentence errors."""

from filterscope.cli import main


def run_cli(capsys, *args):
    """``filterscope *args`` in this process: exit code, stdout, stderr."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_clear_error(code, err, *fragments):
    """Exit code 2, one line on stderr (progress bars aside), no traceback, each fragment in that line."""
    lines = [line for line in err.strip().splitlines() if line.strip() and "|" not in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
