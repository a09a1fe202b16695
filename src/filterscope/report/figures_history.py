"""Figures the report draws from a run's saved numbers (no model, no data): training and decoupling
curves from the per-epoch history, and the engine's latency bars from the bench rows.

:data:`DERIVED` is the single list of them: the figure's file name, the ``metrics.json`` key it is drawn
from, and the function. The report redraws a figure when ``metrics.json`` is newer than it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .figures import plt, save_figure

__all__ = ["DERIVED", "draw_derived"]


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(row["epoch"], row[key]) for row in history if isinstance(row.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _curves(history: list[dict], panels: list[tuple[str, list[tuple[str, str]]]], title: str, path: Path) -> Path | None:
    """One panel per (y label, [(history key, legend)]); panels with no data are left out."""
    filled = [(label, [(key, legend) for key, legend in lines if _series(history, key)[0]]) for label, lines in panels]
    filled = [(label, lines) for label, lines in filled if lines]
    if not filled:
        return None
    columns = min(2, len(filled))
    rows = -(-len(filled) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.0 * rows + 0.4), squeeze=False)
    for axis in axes.flat[len(filled):]:
        axis.set_visible(False)
    for axis, (label, lines) in zip(axes.flat, filled):
        for key, legend in lines:
            epochs, values = _series(history, key)
            axis.plot(epochs, values, marker="o" if len(epochs) < 20 else None, markersize=3, label=legend)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


def draw_training_curves(value: dict, path: Path) -> Path | None:
    history = value.get("history") or []
    return _curves(history, [("cross-entropy", [("train_ce", "training"), ("test_loss", "evaluation split")]),
                             ("top-1", [("train_accuracy", "training"), ("test_accuracy", "evaluation split")])],
                   "Training", path)


def draw_decoupling_curves(value: dict, path: Path) -> Path | None:
    history = value.get("history") or []
    return _curves(history, [
        ("loss", [("train_ce", "cross-entropy"), ("train_mi", "L_mi"), ("train_kl", "L_kl"), ("train_sparsity", "L_s")]),
        ("share of gates open", [("train_gates_mean", "training gates"), ("train_sparsity_target", "target R"),
                                 ("gated_active_fraction", "evaluation gates")]),
        ("top-1", [("train_accuracy", "training"), ("gated_accuracy", "evaluation gates")]),
        ("FLOPs reduction (×)", [("gated_flops_reduction", "evaluation gates")]),
    ], "Decoupling", path)


def draw_engine_latency(value: dict, path: Path) -> Path | None:
    rows = value.get("rows") or []
    if not rows:
        return None
    names = [row["name"] for row in rows]
    medians = [row["latency_us"]["median"] for row in rows]
    figure, axis = plt.subplots(figsize=(7.0, 0.45 * len(rows) + 1.2))
    bars = axis.barh(range(len(rows)), medians, color="#4c72b0")
    for bar, row in zip(bars, rows):
        reduction = row.get("flops_reduction") or 1.0
        axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {bar.get_width():.0f} µs, "
                  f"{reduction:.2f}× fewer FLOPs", va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), names)
    axis.invert_yaxis()
    axis.set_xlabel("batch-1 latency, median (µs)")
    axis.set_xlim(0, max(medians) * 1.6)
    axis.set_title(f"{value.get('model', '')}: latency per image")
    figure.tight_layout()
    return save_figure(figure, path)


#: (figure file name, metrics key it is drawn from, drawing function)
DERIVED: tuple[tuple[str, str, Callable[[dict, Path], Path | None]], ...] = (
    ("training_curves.png", "train", draw_training_curves),
    ("decoupling_curves.png", "decouple", draw_decoupling_curves),
    ("engine_latency.png", "bench", draw_engine_latency),
)


def draw_derived(run: Path, metrics: dict[str, Any]) -> list[Path]:
    """Draw (or redraw, when ``metrics.json`` is newer) the derived figures of one run folder."""
    drawn = []
    stamp = (run / "metrics.json").stat().st_mtime if (run / "metrics.json").is_file() else 0.0
    for name, key, draw in DERIVED:
        value = metrics.get(key)
        target = run / "figures" / name
        if not isinstance(value, dict):
            continue
        if target.is_file() and target.stat().st_mtime >= stamp:
            drawn.append(target)
            continue
        target.parent.mkdir(exist_ok=True)
        if draw(value, target) is not None:
            drawn.append(target)
    return drawn
