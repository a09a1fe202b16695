"""What the demo's steps share: the options and the state handed from step to step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..io.run_dir import RunDir

__all__ = ["DIGITS", "DemoOptions", "DemoState", "is_decoupled"]

DIGITS = "digits"


@dataclass
class DemoOptions:
    """What ``filterscope demo`` runs.

    Attributes:
        run_dir: Where everything is written.
        model, data: Registered model and data set (or a data folder/zip); the digits CNN on digits by default.
        weights: None trains from scratch; a plain checkpoint skips training; a decoupled one also skips decoupling.
        epochs, decouple_epochs: Epochs of dense training and of decoupling (0 skips decoupling and what needs it).
        quick: Smaller samples, fewer steps (:func:`sizes_for`).
        seed: Seeds training, sampling and the analyses.
        threads: Intra-op threads (None: one on digits, torch's default otherwise).
    """

    run_dir: str | Path = "runs/demo"
    model: str = "digits_cnn"
    data: str = DIGITS
    weights: str | None = None
    epochs: int = 30
    decouple_epochs: int = 15
    quick: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True


@dataclass
class DemoState:
    """What the steps hand on: the dense and the decoupled checkpoints and each step's one-line result."""

    options: DemoOptions
    run: RunDir
    dense_weights: str | None = None
    decoupled_weights: str | None = None
    results: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def is_decoupled(weights: str | None) -> bool:
    from .concept_inputs import has_gates

    return weights is not None and has_gates(weights)
