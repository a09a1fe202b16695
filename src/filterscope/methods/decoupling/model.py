"""``decouple(model, config)``: a new model with a gate in every chosen conv unit.

The caller's model is deep-copied, never changed. The copy's chosen convs are replaced by
:class:`GatedConv` and their BatchNorms by :class:`GatedOutput`; a per-layer classifier W_cla
(for L_mi) is added beside them. The result can be saved and re-built from its checkpoint alone
(:func:`save_decoupled`, :func:`load_decoupled`).
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ...core.flops import count_costs
from ...core.gated_flops import build_gated_cost_model
from ...core.errors import UserInputError
from ...core.units import Unit, find_units
from .config import DecoupleConfig
from .gate import ControllingModule, GatedConv, GatedOutput, GateSlot

DECOUPLED_FORMAT = "filterscope.decoupled/1"
NORMALISATION = ("input_mean", "input_std")  # optional checkpoint entries: the per-channel mean and std of the inputs


class DecoupledModel(nn.Module):
    """A network whose gated units choose, per input, which filters run.

    Attributes:
        network: the copied network with gated convs and BatchNorms in place.
        gated_units: names of the gated conv units, in execution order.
        mi_classifiers: one linear classifier per gated layer, K × N^l (Eq. 9).
        config: the resolved :class:`DecoupleConfig`.
    """

    def __init__(self, network: nn.Module, gated_units: list[str], slots: list[GateSlot],
                 out_channels: list[int], num_classes: int, config: DecoupleConfig):
        super().__init__()
        self.network = network
        self.gated_units = list(gated_units)
        self.slots = slots
        self.out_channels = list(out_channels)
        self.num_classes = num_classes
        self.config = config
        self.mi_classifiers = nn.ModuleList(nn.Linear(n, num_classes) for n in out_channels)
        self.gate_threshold = 0.0  # gates open where g > this (see decouple.threshold); kept in the gate biases
        for attribute in ("input_mean", "input_std", "input_shape"):
            if hasattr(network, attribute):
                setattr(self, attribute, getattr(network, attribute))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for slot in self.slots:
            slot.clear()
        return self.network(images)

    def gate_modules(self) -> list[GatedConv]:
        return [self.network.get_submodule(name) for name in self.gated_units]

    def set_noisy_gates(self, noisy: bool) -> None:
        """Noisy SemHash gates in training mode (True, default) or hard gates always (False)."""
        for module in self.gate_modules():
            module.noisy_gates = noisy

    def set_frozen_paths(self, frozen: bool) -> None:
        """Fix every gate to its evaluation value 1(g > 0), without gradient, in training mode too
        (True), or let the gates learn (False, default)."""
        for module in self.gate_modules():
            module.frozen_paths = frozen

    def set_response_recording(self, record: bool, gradient: bool) -> None:
        """Whether training passes measure every gated layer's responses y (only L_kl reads them;
        each costs a pass over the layer's output) and whether y keeps its autograd graph."""
        for slot in self.slots:
            slot.record_response = record
            slot.response_gradient = gradient

    @property
    def frozen_paths(self) -> bool:
        return any(module.frozen_paths for module in self.gate_modules())

    def last_gates(self) -> list[torch.Tensor]:
        """z of every gated layer from the last forward pass, each (B, N^l)."""
        return [slot.gates for slot in self.slots]

    def gate_parameters(self) -> list[nn.Parameter]:
        """Parameters of the controlling modules and of the per-layer classifiers."""
        parameters = [p for m in self.gate_modules() for p in m.controller.parameters()]
        return parameters + list(self.mi_classifiers.parameters())


def bias_by_importance(batchnorm: nn.Module, bias_init: float) -> torch.Tensor:
    """Starting gate logits in [¼, 1]·bias_init, rising with the rank of |γ| of ``batchnorm``."""
    if getattr(batchnorm, "weight", None) is None:  # no affine scale: no ranking to follow
        return torch.full((batchnorm.num_features,), float(bias_init))
    scale = batchnorm.weight.detach().abs().float().cpu()
    rank = torch.empty_like(scale)
    rank[scale.argsort(stable=True)] = torch.arange(len(scale), dtype=scale.dtype)
    return bias_init * (0.25 + 0.75 * rank / max(len(scale) - 1, 1))


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def choose_units(units: list[Unit], config: DecoupleConfig) -> list[Unit]:
    """The units to gate: gateable ones, minus first and last, filtered by include/exclude patterns."""
    candidates = units[1:-1] if config.skip_first_and_last and len(units) > 2 else list(units)
    if config.skip_first_and_last and len(units) <= 2:
        raise UserInputError(
            f"the model has {len(units)} conv units; decoupling leaves the first and the last ungated, so it "
            "needs at least 3 (or set skip_first_and_last=False)."
        )
    chosen = []
    for unit in candidates:
        if config.include and not any(fnmatch.fnmatch(unit.name, p) for p in config.include):
            continue
        if any(fnmatch.fnmatch(unit.name, p) for p in config.exclude):
            continue
        if not unit.gateable:
            warnings.warn(f"unit {unit.name!r} cannot be gated ({unit.reason_not_gateable}); it is left ungated", stacklevel=3)
            continue
        chosen.append(unit)
    if not chosen:
        raise UserInputError("no conv unit was chosen for gating; check the include/exclude patterns.")
    return chosen


def decouple(
    model: nn.Module,
    config: DecoupleConfig | None = None,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    model_name: str | None = None,
) -> DecoupledModel:
    """A decoupled copy of ``model``; ``model`` itself is not changed.

    Args:
        model: any CNN that :func:`find_units` handles, usually pretrained.
        config: decoupling settings (presets resolved against ``model_name``).
        num_classes: K, the classes of the per-layer classifiers.
        input_shape: (C, H, W) of the inputs.
        model_name: the registered name, used for ``preset="auto"`` and for saving.
    """
    config = (config or DecoupleConfig()).resolved(model_name)
    network = copy.deepcopy(model)
    units = find_units(network, input_shape)
    chosen = choose_units(units, config)
    slots, out_channels = [], []
    for unit in chosen:
        slot = GateSlot()
        controller = ControllingModule(unit.in_channels, unit.out_channels, config.reduction, config.gate_bias_init,
                                       config.standardize_gate_input)
        if config.gate_bias_order == "bn_scale":
            controller.expand.bias.data.copy_(bias_by_importance(unit.bn, config.gate_bias_init))
        controller.to(unit.conv.weight.device)
        _set_submodule(network, unit.name, GatedConv(unit.conv, controller, slot, config.gate_noise_std, config.semhash_hard_fraction,
                                                    config.detach_gate_input))
        _set_submodule(network, unit.bn_name, GatedOutput(unit.bn, unit.activation, slot))
        slots.append(slot)
        out_channels.append(unit.out_channels)
    decoupled = DecoupledModel(network, [u.name for u in chosen], slots, out_channels, num_classes, config)
    controller_flops = sum(
        2 * (m.controller.squeeze.in_features * m.controller.squeeze.out_features
             + m.controller.expand.in_features * m.controller.expand.out_features)
        for m in decoupled.gate_modules()
    )
    decoupled.cost_model = build_gated_cost_model(
        units, decoupled.gated_units, controller_flops, count_costs(model, input_shape, find_units(model, input_shape)).linear_flops
    )
    decoupled.all_unit_names = [u.name for u in units]
    decoupled.gated_unit_indices = [u.index for u in chosen]
    decoupled.model_name = model_name
    decoupled.input_shape = tuple(input_shape)
    decoupled.to(next(model.parameters()).device)
    return decoupled.train(model.training)


def save_decoupled(model: DecoupledModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write a checkpoint from which :func:`load_decoupled` rebuilds the model without other code."""
    from ...models.checkpoint import save_atomically

    payload = {"format": DECOUPLED_FORMAT, **decoupled_metadata(model), "state_dict": model.state_dict(), **(extra or {})}
    return save_atomically(payload, path)


def decoupled_metadata(model: DecoupledModel) -> dict:
    """What :func:`load_decoupled` needs besides the weights."""
    metadata = {
        "format": DECOUPLED_FORMAT,
        "base_model": model.model_name,
        "num_classes": model.num_classes,
        "input_shape": list(model.input_shape),
        "decouple_config": asdict(model.config),
    }
    for name in NORMALISATION:  # how its inputs are normalised, when the run said so (run_decoupling does)
        if getattr(model, name, None) is not None:
            metadata[name] = [float(v) for v in getattr(model, name)]
    if model.gate_threshold:  # already in the gate biases; recorded to say where they came from
        metadata["gate_threshold"] = float(model.gate_threshold)
    return metadata


def load_decoupled(path: str | Path, base_model: nn.Module | None = None) -> DecoupledModel:
    """Rebuild a decoupled model from a checkpoint of :func:`save_decoupled` or of ``filterscope decouple``.

    Args:
        path: the checkpoint.
        base_model: the undecoupled architecture, needed only when it is not a built-in model.
    """
    from ...models import create_model
    from ...models.checkpoint import check_state_dict_fits, read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("format") != DECOUPLED_FORMAT:
        raise UserInputError(f"{str(path)!r} is not a decoupled-model checkpoint; create one with `filterscope decouple`.")
    if base_model is None:
        if not payload.get("base_model"):
            raise UserInputError(f"{str(path)!r} was decoupled from a custom model; pass that model as base_model.")
        base_model = create_model(payload["base_model"], payload["num_classes"])
    config = DecoupleConfig(**payload["decouple_config"])
    model = decouple(base_model, config, num_classes=payload["num_classes"],
                     input_shape=tuple(payload["input_shape"]), model_name=payload.get("base_model"))
    check_state_dict_fits(model, payload["state_dict"], str(path))
    model.load_state_dict(payload["state_dict"], strict=False)
    for name in NORMALISATION:
        if name in payload:
            setattr(model, name, tuple(payload[name]))
    model.gate_threshold = float(payload.get("gate_threshold", 0.0))
    return model.eval()
