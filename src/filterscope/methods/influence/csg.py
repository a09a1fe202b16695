"""Class-specific gates (CSG, Liang et al., ECCV 2020) on the penultimate layer: the baseline for Algorithm 1.

A learnable gate matrix ``G ∈ [0, 1]^{classes × features}`` sits between the penultimate
features and the final layer. During training each instance of class ``y`` goes through the
ordinary path *and* through the gated path ``head(I ⊙ G[y])``; the loss is

    CE(head(I), y) + CE(head(I ⊙ G[y]), y) + λ · ||G||_1 / (classes · features)

and after every step ``G`` is projected back onto ``[0, 1]``. The sparsity penalty drives each
class's gates towards the few features the class needs, so ``G``'s rows are index sets to set
beside those of Algorithm 1 (:func:`csg_index_sets`, top-``k`` per class, ties to the lower index).

Simplifications against the paper, to keep the baseline cheap: only the head and the gates learn,
on cached penultimate features (the paper trains the whole network), and both paths are taken at
every step instead of alternating between them at random. The gate learning rate is separate from
the head's; CSG is known to diverge with too high a gate rate, so :func:`train_csg` retries with
the gate rate divided by 10 (at most ``max_retries`` times) when the loss becomes non-finite, and
records every attempt.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ...core.errors import UserInputError
from .criteria import select_top

__all__ = ["CSGConfig", "CSGResult", "ClassSpecificGates", "csg_index_sets", "csg_sets_above", "train_csg"]


@dataclass
class CSGConfig:
    """Settings of the CSG baseline.

    Attributes:
        epochs: Passes over the cached features.
        lr: Learning rate of the head (SGD, momentum 0.9, cosine decay).
        gate_lr: Learning rate of the gates (same schedule).
        sparsity: ``λ``, the weight of the mean absolute gate value.
        batch_size: Rows per step.
        weight_decay: L2 penalty on the head.
        gate_init: Initial value of every gate.
        seed: Seed of the shuffling.
        max_retries: Restarts with a 10× lower gate rate after a non-finite loss.
    """

    epochs: int = 10
    lr: float = 0.01
    gate_lr: float = 0.1
    sparsity: float = 2.0
    batch_size: int = 128
    weight_decay: float = 5e-4
    gate_init: float = 1.0
    seed: int = 0
    max_retries: int = 3

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserInputError(f"epochs must be at least 1, got {self.epochs}.")
        if not (self.lr > 0 and self.gate_lr > 0):
            raise UserInputError(f"learning rates must be positive, got lr={self.lr}, gate_lr={self.gate_lr}.")
        if self.sparsity < 0:
            raise UserInputError(f"sparsity must be non-negative, got {self.sparsity}.")


class ClassSpecificGates(nn.Module):
    """A final layer with a class × feature gate matrix.

    ``forward(features)`` is the ordinary (ungated) head; ``forward(features, labels)`` gates each
    row by its class's gates (training only: it needs the label); :meth:`gated_logits` scores
    every class ``c`` through its own gates, ``logit_c = Σ_j W[c, j] G[c, j] I_j + b_c``, which needs
    no label and is CSG's analogue of the decomposed layer.

    Args:
        head: The final ``nn.Linear`` (copied).
        gate_init: Initial gate value.
    """

    def __init__(self, head: nn.Linear, gate_init: float = 1.0):
        super().__init__()
        self.head = copy.deepcopy(head)
        self.gates = nn.Parameter(torch.full((head.out_features, head.in_features), float(gate_init)))

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return self.head(features)
        return self.head(features * self.gates[labels])

    def gated_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Every class scored through its own gates (no label needed)."""
        logits = features @ (self.head.weight * self.gates).t()
        return logits + self.head.bias if self.head.bias is not None else logits

    @torch.no_grad()
    def project_(self) -> None:
        """Clip the gates to ``[0, 1]`` in place."""
        self.gates.clamp_(0.0, 1.0)

    def density(self) -> float:
        """Mean gate value (the ℓ1 norm over the number of gates)."""
        return float(self.gates.detach().abs().mean())


@dataclass
class CSGResult:
    """A trained :class:`ClassSpecificGates` with its training record.

    Attributes:
        model: The trained gates and head.
        history: One record per epoch of the successful attempt.
        attempts: ``{"gate_lr", "diverged", "epochs_done"}`` per attempt, in order.
        config: The settings (with the gate rate that succeeded).
    """

    model: ClassSpecificGates
    history: list[dict[str, float]]
    attempts: list[dict[str, Any]]
    config: CSGConfig = field(repr=False)

    @property
    def gates(self) -> np.ndarray:
        """``(classes, features)`` gate values."""
        return self.model.gates.detach().cpu().numpy()

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "attempts": self.attempts, "config": asdict(self.config),
                "density": self.model.density()}


def _train_once(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, config: CSGConfig, gate_lr: float,
                progress: bool) -> tuple[ClassSpecificGates, list[dict[str, float]], bool, int]:
    model = ClassSpecificGates(head, config.gate_init).train()
    optimizer = torch.optim.SGD(
        [
            {"params": model.head.parameters(), "lr": config.lr, "weight_decay": config.weight_decay, "peak": config.lr},
            {"params": [model.gates], "lr": gate_lr, "weight_decay": 0.0, "peak": gate_lr},
        ],
        momentum=0.9,
    )
    generator = torch.Generator().manual_seed(config.seed)
    num_rows = features.shape[0]
    total_steps = max(config.epochs * ((num_rows + config.batch_size - 1) // config.batch_size), 1)
    history, step = [], 0
    for epoch in tqdm(range(config.epochs), desc=f"CSG gate_lr={gate_lr:g}", disable=not progress, leave=False):
        order = torch.randperm(num_rows, generator=generator)
        sums = {"loss": 0.0, "ce_ordinary": 0.0, "ce_gated": 0.0, "correct_ordinary": 0.0, "correct_gated": 0.0}
        for start in range(0, num_rows, config.batch_size):
            rows = order[start : start + config.batch_size]
            x, y = features[rows], labels[rows]
            factor = 0.5 * (1 + np.cos(np.pi * step / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = group["peak"] * factor
            ordinary, gated = model(x), model(x, y)
            ce_ordinary, ce_gated = F.cross_entropy(ordinary, y), F.cross_entropy(gated, y)
            loss = ce_ordinary + ce_gated + config.sparsity * model.gates.abs().mean()
            if not torch.isfinite(loss):
                return model, history, True, epoch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.project_()
            step += 1
            count = len(rows)
            sums["loss"] += float(loss.detach()) * count
            sums["ce_ordinary"] += float(ce_ordinary.detach()) * count
            sums["ce_gated"] += float(ce_gated.detach()) * count
            sums["correct_ordinary"] += float((ordinary.argmax(1) == y).sum())
            sums["correct_gated"] += float((gated.argmax(1) == y).sum())
        record = {name: value / num_rows for name, value in sums.items()}
        record.update({"epoch": epoch + 1, "density": model.density()})
        history.append(record)
    return model.eval(), history, False, config.epochs


def train_csg(
    head: nn.Linear,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: CSGConfig | None = None,
    *,
    progress: bool = True,
) -> CSGResult:
    """Train class-specific gates (and the head) on cached penultimate features.

    Args:
        head: The model's final ``nn.Linear`` (copied, not changed).
        features: ``(N, features)`` inputs of the final layer on the training split.
        labels: ``(N,)`` true labels.
        config: The settings.
        progress: Show a progress bar.

    Returns:
        The :class:`CSGResult`.

    Raises:
        FloatingPointError: The loss stayed non-finite after ``max_retries`` lower gate rates.
    """
    config = copy.deepcopy(config or CSGConfig())
    config.validate()
    if not isinstance(head, nn.Linear):
        raise UserInputError(f"CSG needs the final nn.Linear layer, got {type(head).__name__}; pass model's final layer.")
    attempts = []
    gate_lr = config.gate_lr
    for _ in range(config.max_retries + 1):
        model, history, diverged, epochs_done = _train_once(head, features, labels, config, gate_lr, progress)
        attempts.append({"gate_lr": gate_lr, "diverged": diverged, "epochs_done": epochs_done})
        if not diverged:
            config.gate_lr = gate_lr
            return CSGResult(model=model, history=history, attempts=attempts, config=config)
        gate_lr /= 10
    raise FloatingPointError(
        f"CSG training diverged at every gate learning rate down to {gate_lr * 10:g}; lower --gate-lr or the head's lr."
    )


def csg_index_sets(gates: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """The ``k`` features with the largest gates of every class (ties go to the lower index).

    Returns:
        int64 ``(classes, k)``.
    """
    gates = gates.detach().cpu().numpy() if isinstance(gates, torch.Tensor) else np.asarray(gates)
    if not 1 <= k <= gates.shape[1]:
        raise UserInputError(f"k={k} is outside [1, {gates.shape[1]}]; pass k between 1 and {gates.shape[1]}.")
    return select_top(gates, k)


def csg_sets_above(gates: np.ndarray | torch.Tensor, threshold: float = 0.5) -> list[list[int]]:
    """The features whose gate exceeds ``threshold``, per class (sets of different sizes)."""
    gates = gates.detach().cpu().numpy() if isinstance(gates, torch.Tensor) else np.asarray(gates)
    return [np.flatnonzero(row > threshold).tolist() for row in gates]
