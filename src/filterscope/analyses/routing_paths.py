"""Critical data routing paths (CDRP; Wang et al., "Interpret Neural Networks by Identifying Critical Data
Routing Paths", CVPR 2018): per input, the channels of a trained network that its prediction needs.

Distillation guided routing: a control gate λ_k ∈ R^{C_k}, λ_k ≥ 0, multiplies every channel of each chosen
layer k; the gates start at 1 (the network as trained) and, with the weights fixed, a few steps of gradient
descent on

    min_Λ  L(f(x), f(x; Λ)) + γ Σ_k ‖λ_k‖₁,   s.t. λ_k ≥ 0

keep the network's prediction (L: the cross-entropy of the gated network's output against the original
output's softmax, the distillation loss of the paper) with as few channels as the L1 penalty allows (SGD with
momentum, λ clipped at 0 after each step). The concatenated λ of an input is its CDRP; thresholding it gives
a binary path (:attr:`CriticalPathConfig.threshold`). Defaults follow the paper (30 steps, learning rate 0.1,
momentum 0.9, γ = 0.05).

Where the gate acts: the paper multiplies a layer's output after its ReLU; here λ multiplies the unit's
BatchNorm output (its conv output without BatchNorm), before the activation, which is the same for ReLU and
LeakyReLU (act(λ·x) = λ·act(x) for λ ≥ 0) and lets a unit whose activation module is shared be gated alone.
The hooks live only inside :func:`critical_routing_paths`; the network's weights, flags and hooks are as
before when it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserInputError
from ..core.eval_mode import evaluation_mode
from ..core.hooks import Hooks
from ..core.units import Unit


@dataclass
class CriticalPathConfig:
    """The settings of distillation guided routing (see the module).

    Attributes:
        steps: gradient steps T per input.
        learning_rate: SGD step size on the gates.
        momentum: SGD momentum.
        l1: γ, the weight of the L1 penalty on the gates.
        threshold: the binary CDRP is λ > threshold (used by ``binary``; the real λ are kept too).
        batch_size: inputs optimised at once (each has its own gates; the loss is summed over the batch, so
            the inputs do not interact in evaluation mode).
    """

    steps: int = 30
    learning_rate: float = 0.1
    momentum: float = 0.9
    l1: float = 0.05
    threshold: float = 0.0
    batch_size: int = 64

    def validate(self) -> "CriticalPathConfig":
        if self.steps < 1 or self.batch_size < 1:
            raise UserInputError(f"the CDRP steps and batch size must be at least 1, got {self.steps} and {self.batch_size}.")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.l1 < 0 or self.threshold < 0:
            raise UserInputError("the CDRP learning rate must be positive, momentum in [0, 1), l1 and threshold at "
                                 f"least 0; got {self.learning_rate}, {self.momentum}, {self.l1}, {self.threshold}.")
        return self


@dataclass
class CriticalPaths:
    """The CDRPs of a set of inputs.

    Attributes:
        gates: λ per input, the units' channels concatenated in the order given, (N, Σ C_k).
        predictions: the network's prediction on each input without gates.
        gated_predictions: its prediction with the learned gates.
        unit_names, widths: the gated units and their channel counts (the blocks of ``gates``).
        threshold: λ > threshold is the binary path.
    """

    gates: np.ndarray
    predictions: np.ndarray
    gated_predictions: np.ndarray
    unit_names: list[str]
    widths: list[int]
    threshold: float

    @property
    def binary(self) -> np.ndarray:
        return self.gates > self.threshold

    @property
    def kept_prediction(self) -> float:
        """Share of inputs whose prediction the gates keep."""
        return float((self.predictions == self.gated_predictions).mean()) if len(self.predictions) else float("nan")

    @property
    def open_fraction(self) -> float:
        """Share of gates above the threshold (1.0 = not sparse at all)."""
        return float(self.binary.mean()) if self.gates.size else float("nan")


def _gate_hook(gates: list[torch.Tensor], index: int):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * gates[index][:, :, None, None]

    return hook


def _optimise_batch(network: nn.Module, units: Sequence[Unit], images: torch.Tensor,
                    config: CriticalPathConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(λ, prediction without gates, prediction with λ) of one batch."""
    with torch.no_grad():
        reference = F.softmax(network(images), dim=1)
    widths = [unit.out_channels for unit in units]
    gates = torch.ones(len(images), sum(widths), device=images.device, requires_grad=True)
    blocks: list[torch.Tensor] = []
    optimizer = torch.optim.SGD([gates], lr=config.learning_rate, momentum=config.momentum)
    with Hooks() as hooks:
        for index, unit in enumerate(units):
            hooks.forward(unit.bn if unit.bn is not None else unit.conv, _gate_hook(blocks, index))
        for _ in range(config.steps):
            blocks[:] = list(torch.split(gates, widths, dim=1))
            log_probabilities = F.log_softmax(network(images), dim=1)
            distillation = -(reference * log_probabilities).sum(dim=1)
            loss = (distillation + config.l1 * gates.abs().sum(dim=1)).sum()
            # The gradient of λ alone: the network's parameters get no .grad.
            (gates.grad,) = torch.autograd.grad(loss, [gates])
            optimizer.step()
            with torch.no_grad():
                gates.clamp_(min=0.0)
        with torch.no_grad():
            blocks[:] = list(torch.split(gates, widths, dim=1))
            gated = network(images).argmax(dim=1)
    return gates.detach(), reference.argmax(dim=1), gated


def critical_routing_paths(network: nn.Module, units: Sequence[Unit], images: torch.Tensor,
                           config: CriticalPathConfig | None = None) -> CriticalPaths:
    """The CDRP of each image: per-channel control gates on ``units`` learned to keep the prediction.

    Args:
        network: a trained classifier (e.g. the dense network of a decoupled model); not changed.
        units: the units of ``network`` to gate (from :func:`filterscope.find_units` on it).
        images: (N, C, H, W), normalised as the network expects.
        config: steps, learning rate, momentum, γ and threshold (the paper's by default).

    Returns:
        λ per image with the predictions before and after gating.
    """
    config = (config or CriticalPathConfig()).validate()
    if not units:
        raise UserInputError("no units to gate; pass units of the network from filterscope.find_units.")
    owned = {id(module) for module in network.modules()}
    if any(id(unit.conv) not in owned for unit in units):
        raise UserInputError("the units do not belong to this network; call find_units on the network you pass.")
    device = next(network.parameters()).device
    gates, predictions, gated = [], [], []
    with evaluation_mode(network):
        for start in range(0, len(images), config.batch_size):
            batch_gates, batch_predictions, batch_gated = _optimise_batch(
                network, units, images[start:start + config.batch_size].to(device), config)
            gates.append(batch_gates.cpu())
            predictions.append(batch_predictions.cpu())
            gated.append(batch_gated.cpu())
    width = sum(unit.out_channels for unit in units)
    return CriticalPaths(
        gates=torch.cat(gates).numpy() if gates else np.zeros((0, width), dtype=np.float32),
        predictions=torch.cat(predictions).numpy() if predictions else np.zeros(0, dtype=np.int64),
        gated_predictions=torch.cat(gated).numpy() if gated else np.zeros(0, dtype=np.int64),
        unit_names=[unit.name for unit in units], widths=[unit.out_channels for unit in units],
        threshold=config.threshold)
