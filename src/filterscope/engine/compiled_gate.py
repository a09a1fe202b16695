"""The gate of one unit compiled into one C call (``gate_kernel.c``), built on first use with the system's C compiler.

Why hand-written C: a gate is a few hundred multiply-adds, so at batch 1 its cost is its calls, not its work. In
torch it is five calls (the spatial sum, two ``addmm``, a ReLU, the read-back), and inside the running executor,
its convolutions between the gates, they cost 19–28 µs per gate (ResNet-20, one thread, timed around the call
by ``benchmarks/engine/gate_cost.py``); fused into one C call through :mod:`ctypes` the same gate costs 10–15 µs
there, of which the C function and its arguments took 5–7 µs in a profile from inside the wrapper (the rest is
Python running cold between two convolutions). NumPy products (33 µs in place)
and a numba-compiled gate (7–13 µs for the function and its arguments, 2–6 µs more than C: turning the tensor into
an array and numba's dispatch) were measured too. No library fuses this small an operation with less overhead,
and a torch extension would need the torch headers and a minute of compiling.

The library is compiled once per source and compiler into the cache folder (``FILTERSCOPE_CACHE``, default
``~/.cache/filterscope``), written to a temporary name and renamed, so two processes never load half a file.
Only portable flags are used (no ``-march=native``): the folder may be shared by machines with other CPUs.
Where no compiler works (or on Windows) :func:`gate_function` gives None with the reason, and the executor's
gates run in torch (``gates="auto"``) or the build stops with that reason (``gates="compiled"``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from ..core.locations import cache_dir

SOURCE = Path(__file__).with_name("gate_kernel.c")
FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")
_LOADED: dict[str, object] = {}  # compiler → the loaded function, or the reason it is unavailable


def gate_function(compiler: str | None = None):
    """The compiled ``filterscope_gate`` (a ctypes function), built and loaded once per process, or None when it
    cannot be (then :func:`unavailable_reason` says why). ``compiler`` defaults to ``$CC``, then ``cc``."""
    compiler = compiler or _default_compiler()
    if compiler not in _LOADED:
        try:
            _LOADED[compiler] = _load(_build(compiler))
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            _LOADED[compiler] = f"{type(error).__name__}: {error}"
    loaded = _LOADED[compiler]
    return None if isinstance(loaded, str) else loaded


def unavailable_reason(compiler: str | None = None) -> str | None:
    """Why :func:`gate_function` gives None for ``compiler`` (None when it gives the function)."""
    compiler = compiler or _default_compiler()
    return None if gate_function(compiler) is not None else _LOADED[compiler]


def _default_compiler() -> str:
    configured = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "").split(" ")[0]
    for name in (configured, "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return configured or "cc"


def _build(compiler: str) -> Path:
    if os.name != "posix":
        raise RuntimeError(f"the compiled gate is built on POSIX systems only, not on {platform.system()}")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler {compiler!r} on the PATH (set CC, or install one, e.g. gcc)")
    source = SOURCE.read_bytes()
    identity = hashlib.sha256(source + repr((FLAGS, compiler, platform.machine())).encode()).hexdigest()[:16]
    folder = cache_dir() / "compiled"
    library = folder / f"gate-{identity}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, suffix=".so.partial")
    os.close(handle)
    try:
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", partial], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed to build {SOURCE.name}: {result.stderr.strip()[:500]}")
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def _load(library: Path):
    function = ctypes.CDLL(str(library)).filterscope_gate
    pointer, size = ctypes.c_void_p, ctypes.c_long
    function.argtypes = [pointer, size, size, size, size, pointer, pointer, size, pointer, pointer, size, pointer]
    function.restype = None
    return function
