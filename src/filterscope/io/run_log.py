"""``--log FILE``: the per-step and per-epoch numbers of a run as JSON lines, for tools to follow.

Each line is one JSON object (``{"kind": "step", ...}`` or ``{"kind": "epoch", ...}``), written and
flushed as it happens, so a run that is killed leaves every line up to that point.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonLinesLog:
    """Append JSON objects, one per line, to ``path`` (created with its folder); flushed after each."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._stream = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = self.path.open("a", encoding="utf-8")

    def write(self, kind: str, **values: Any) -> None:
        if self._stream is not None:
            self._stream.write(json.dumps({"kind": kind, **values}) + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
