"""What every figure module shares: a headless matplotlib and an atomic PNG writer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..core.atomic import atomic_file  # noqa: E402


def save_figure(figure, path: str | Path) -> Path:
    """Save as PNG through a temporary file and a rename, then close the figure."""
    try:
        with atomic_file(path) as stream:
            figure.savefig(stream, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)
    return Path(path)
