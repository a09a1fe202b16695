"""What a detector of adversarial inputs reads from a network, one vector per image.

Every feature covers the same units, the gated units of a decoupled model, so that they compare like with like:

* ``path``: the decoupled model's binary calculation path, z = 1(g > τ) of every gated filter
  (Li et al., 2020, Section 4.4);
* ``gate_scores``: the real-valued gate logits g − τ behind that path (its margin: the path is their sign), to
  show how much of the gates' information the binary path keeps;
* ``dense_binary``: the dense network's binarised activation pattern, 1(GAP(act(BN(conv x))) > 0) per filter,
  the same number of bits as the path;
* ``dense_real``: the dense network's real-valued pooled activations GAP(act(·)) of the same filters, what a
  user without filterscope would feed a detector;
* ``cdrp``: the critical data routing path of Wang et al. (2018) on the dense network, the real-valued control
  gates λ (:mod:`.routing_paths`); ``cdrp_binary`` is λ > threshold.

"The dense network" is any network with the gated units' names; for a decoupled checkpoint it is the network
with its gates taken out and its fine-tuned weights (``filterscope.engine.base_network``), passed in by the
caller (this layer does not import the engine).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core.capture import capture
from ..core.errors import UserInputError
from ..core.eval_mode import evaluation_mode
from ..core.units import Unit, find_units
from .routing_paths import CriticalPathConfig, critical_routing_paths

FEATURES = ("path", "gate_scores", "dense_binary", "dense_real", "cdrp", "cdrp_binary")
DEFAULT_FEATURES = ("path", "gate_scores", "dense_binary", "dense_real", "cdrp")


def check_features(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in FEATURES]
    if unknown or not names:
        raise UserInputError(f"unknown features {unknown or list(names)}; pass some of {', '.join(FEATURES)}.")
    return tuple(dict.fromkeys(names))


def path_features(decoupled: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The binary calculation path of each image, (N, Σ N^l) bool, from ``decoupled.last_gates()``.

    The model runs in evaluation mode (hard gates); its modules' training flags are restored afterwards.
    """
    return _gate_rows(decoupled, images, batch_size, lambda slot: slot.gates.gt(0.5), torch.bool)


def gate_score_features(decoupled: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The gate logits of each image, (N, Σ N^l) float32: g − τ, positive exactly where the path is open."""
    return _gate_rows(decoupled, images, batch_size, lambda slot: slot.gate_logits.float(), torch.float32)


@torch.no_grad()
def _gate_rows(decoupled: nn.Module, images: torch.Tensor, batch_size: int, read, dtype) -> np.ndarray:
    if not hasattr(decoupled, "last_gates"):
        raise UserInputError("the model has no gates; decouple it first (filterscope decouple, or fs.decouple).")
    device = next(decoupled.parameters()).device
    rows = []
    with evaluation_mode(decoupled):
        for start in range(0, len(images), batch_size):
            decoupled(images[start:start + batch_size].to(device))
            rows.append(torch.cat([read(slot) for slot in decoupled.slots], dim=1).cpu())
    width = sum(getattr(decoupled, "out_channels", []))
    return torch.cat(rows).numpy() if rows else torch.zeros((0, width), dtype=dtype).numpy()


def units_named(network: nn.Module, names: Sequence[str], input_shape: tuple[int, int, int]) -> list[Unit]:
    """The units of ``network`` with these names, in this order (one clear error for a missing one)."""
    by_name = {unit.name: unit for unit in find_units(network, input_shape)}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UserInputError(f"the dense network has no units {missing}; pass the network the model was decoupled "
                             "from (filterscope.engine.base_network(decoupled)).")
    return [by_name[name] for name in names]


@torch.no_grad()
def pooled_activations(network: nn.Module, units: Sequence[Unit], images: torch.Tensor,
                       batch_size: int = 256) -> np.ndarray:
    """GAP of each unit's post-activation output, (N, Σ C_k) float32 (``core.capture`` at ``where="post"``)."""
    device = next(network.parameters()).device
    with evaluation_mode(network):
        with capture(network, units, ("mean",), where="post", num_samples=max(len(images), 1)) as recorder:
            for start in range(0, len(images), batch_size):
                network(images[start:start + batch_size].to(device))
    arrays = recorder.arrays["mean"]
    return np.concatenate([arrays[unit.name] for unit in units], axis=1)


def image_features(decoupled: nn.Module, dense_network: nn.Module, images: torch.Tensor, names: Sequence[str],
                   *, critical_config: CriticalPathConfig | None = None, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Each named feature of ``images`` as a (N, D) float32 array (see the module for the names)."""
    names = check_features(names)
    features: dict[str, np.ndarray] = {}
    if "path" in names:
        features["path"] = path_features(decoupled, images, batch_size).astype(np.float32)
    if "gate_scores" in names:
        features["gate_scores"] = gate_score_features(decoupled, images, batch_size)
    if {"dense_binary", "dense_real", "cdrp", "cdrp_binary"} & set(names):
        units = units_named(dense_network, decoupled.gated_units, tuple(decoupled.input_shape))
        if {"dense_binary", "dense_real"} & set(names):
            pooled = pooled_activations(dense_network, units, images, batch_size)
            if "dense_binary" in names:
                features["dense_binary"] = (pooled > 0).astype(np.float32)
            if "dense_real" in names:
                features["dense_real"] = pooled.astype(np.float32)
        if {"cdrp", "cdrp_binary"} & set(names):
            critical = critical_routing_paths(dense_network, units, images, critical_config)
            if "cdrp" in names:
                features["cdrp"] = critical.gates.astype(np.float32)
            if "cdrp_binary" in names:
                features["cdrp_binary"] = critical.binary.astype(np.float32)
    return {name: features[name] for name in names}
