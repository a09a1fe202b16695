"""Files written atomically: into a temporary file beside the target, then renamed onto it.

A reader (or a resumed run) sees the old file or the new one, never half of one; a write that
fails or is interrupted leaves no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

FILE_MODE = 0o644  # mkstemp creates 0600; run directories are meant to be shared


@contextmanager
def atomic_file(path: str | os.PathLike, binary: bool = True, durable: bool = False) -> Iterator[IO]:
    """``with atomic_file(target) as stream: ...`` writes ``stream`` onto ``target`` when the block ends.

    Args:
        binary: open the stream in ``"wb"`` (True) or ``"w"`` mode.
        durable: flush to disk (fsync) before the rename, for files whose loss costs work (checkpoints).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if binary else "w") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
