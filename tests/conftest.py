import os
from pathlib import Path

import pytest

from filterscope.core.locations import shared_dir

SHARED = shared_dir()
CIFAR_ZIP = SHARED / "data" / "cifar10-jpeg.zip"
RESNET20 = SHARED / "models" / "resnet20-12fca82f.th"
RESNET56 = SHARED / "models" / "resnet56-4bfd9763.th"


def run_torchrun(script_text: str, tmp_path: Path, processes: int = 2):
    """Run ``script_text`` (given ``tmp_path`` as its argument) under ``torchrun`` with ``processes``
    CPU processes of one thread each, importing this checkout's ``src``; the completed process."""
    import shutil
    import subprocess
    import sys

    beside = Path(sys.executable).parent / "torchrun"  # this interpreter's torch, not another on PATH
    torchrun = str(beside) if beside.is_file() else shutil.which("torchrun")
    script = tmp_path / "torchrun_script.py"
    script.write_text(script_text)
    source = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run([torchrun, "--standalone", f"--nproc_per_node={processes}", str(script), str(tmp_path)],
                          env=env, capture_output=True, timeout=300)


def require_shared(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"needs the shared data/checkpoints ({', '.join(missing)}); set FILTERSCOPE_SHARED")


def make_read_only(folder: Path) -> str | None:
    """Make ``folder`` unwritable for this process: ``chmod a-w``, or as root, who ignores permission bits,
    ``chattr +i`` (immutable: no new entries, whoever asks). None, or why it cannot be done here (root
    without chattr, or without the capability to set the flag); undo it with :func:`release_read_only`."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o555)
        return None
    if shutil.which("chattr") is None:
        return "running as root, which ignores permission bits, and chattr is not installed"
    result = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        return f"running as root, which ignores permission bits, and chattr +i failed ({result.stderr.strip()})"
    return None


def release_read_only(folder: Path) -> None:
    """Undo :func:`make_read_only` (so that the folder can be removed)."""
    import shutil
    import subprocess

    if os.geteuid() == 0 and shutil.which("chattr") and folder.exists():
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    if folder.exists():
        folder.chmod(0o755)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded data sets go to one cache folder per test session, never the user's ``~/.cache``.

    Session-scoped, so the shared CIFAR zip is decoded once per session and reused by every test
    that reads it; tests that need an empty cache set ``FILTERSCOPE_CACHE`` themselves.
    """
    previous = os.environ.get("FILTERSCOPE_CACHE")
    os.environ["FILTERSCOPE_CACHE"] = str(tmp_path_factory.mktemp("filterscope-cache"))
    yield
    if previous is None:
        os.environ.pop("FILTERSCOPE_CACHE", None)
    else:
        os.environ["FILTERSCOPE_CACHE"] = previous


# Tests run on small tensors on busy 2-core machines, where torch's default intra-op threading
# makes them many times slower; one thread keeps them fast and repeatable.
import torch  # noqa: E402

torch.set_num_threads(1)
