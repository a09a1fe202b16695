"""How many intra-op CPU threads torch should use.

Torch starts one intra-op thread per core. On a machine whose cores are already busy this
oversubscribes them: with two training processes running on a 2-core machine, ResNet-20 ran 1.5×
faster on 1 thread than on 2 (``benchmarks/threads/``). The default here is the number of cores not
already busy: cores minus the 1-minute load average, at least 1.
"""

from __future__ import annotations

import os

import torch

from .errors import UserInputError


def default_threads() -> int:
    """Cores not already busy (``os.cpu_count()`` minus the 1-minute load average, rounded), at least 1."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        busy = 0.0
    return max(1, min(cores, cores - int(round(busy))))


def check_threads(threads: int | None) -> int | None:
    """``threads`` if it is None or at least 1; one clear error otherwise."""
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be at least 1, got {threads}; omit it to use the cores not already busy.")
    return threads


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`) and return the number set."""
    count = check_threads(threads) or default_threads()
    torch.set_num_threads(count)
    return count
