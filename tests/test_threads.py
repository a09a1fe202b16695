"""Intra-op threads: the default leaves busy cores alone; a bad count is one clear error."""

from __future__ import annotations

import os

import pytest
import torch

from filterscope.core.errors import UserInputError
from filterscope.core.threads import check_threads, default_threads, use_threads


def test_the_default_is_the_cores_not_already_busy(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 1.0, 1.0))
    assert default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert default_threads() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    assert default_threads() == 11


def test_use_threads_sets_torch_and_rejects_zero():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert check_threads(None) is None
    with pytest.raises(UserInputError, match="--threads must be at least 1"):
        use_threads(0)
