"""``decouple(model, config)``: a new model with a gate in every chosen conv unit.

The caller's model is deep-copied, never changed. The copy's chosen convs are replaced by
:class:`GatedConv` and their BatchNorms by :class:`GatedOutput`; a per-layer classifier W_cla
(for L_mi) is added beside them. :class:`DecoupledModel` does all of it in its constructor, so
that a decoupled model is whole the moment it exists; it can be saved and re-built from its
checkpoint alone (:mod:`.checkpoint`).
"""

from __future__ import annotations

import copy
import fnmatch
import warnings

import torch
from torch import nn

from ...core.flops import count_costs
from ...core.gated_flops import build_gated_cost_model
from ...core.errors import UserInputError
from ...core.units import Unit, find_units
from .config import DecoupleConfig
from .gate import ControllingModule, GatedConv, GatedOutput, GateSlot


class DecoupledModel(nn.Module):
    """A network whose gated units choose, per input, which filters run; built whole by its constructor.

    Args:
        model: any CNN that :func:`find_units` handles, usually pretrained; it is deep-copied, never changed.
        config: decoupling settings (presets resolved against ``model_name``).
        num_classes: K, the classes of the per-layer classifiers.
        input_shape: (C, H, W) of the inputs.
        model_name: the registered name, used for ``preset="auto"`` and for saving.
        input_mean, input_std: how the inputs are normalised (per channel); default the ``model``'s
            own attributes of those names, if any (a registered model's are in its registry entry).
        gate_threshold: the threshold τ the gate biases have been shifted by (a record; see
            :mod:`.threshold`).

    Attributes:
        network: the copied network with gated convs and BatchNorms in place.
        gated_units: names of the gated conv units, in execution order.
        all_unit_names: names of every conv unit of the network; ``gated_unit_indices`` the
            positions of the gated ones among them.
        mi_classifiers: one linear classifier per gated layer, K × N^l (Eq. 9).
        cost_model: FLOPs per input under given gates (:class:`GatedCostModel`).
        config: the resolved :class:`DecoupleConfig`.
    """

    def __init__(self, model: nn.Module, config: DecoupleConfig | None = None, *, num_classes: int,
                 input_shape: tuple[int, int, int] = (3, 32, 32), model_name: str | None = None,
                 input_mean: tuple[float, ...] | None = None, input_std: tuple[float, ...] | None = None,
                 gate_threshold: float = 0.0):
        super().__init__()
        self.config = (config or DecoupleConfig()).resolved(model_name)
        self.network = copy.deepcopy(model)
        units = find_units(self.network, input_shape)
        chosen = choose_units(units, self.config)
        self.slots = [gate_unit(self.network, unit, self.config) for unit in chosen]
        self.gated_units = [u.name for u in chosen]
        self.all_unit_names = [u.name for u in units]
        self.gated_unit_indices = [u.index for u in chosen]
        self.out_channels = [u.out_channels for u in chosen]
        self.num_classes = num_classes
        self.mi_classifiers = nn.ModuleList(nn.Linear(n, num_classes) for n in self.out_channels)
        self.cost_model = build_gated_cost_model(
            units, self.gated_units, self._controller_flops(),
            count_costs(model, input_shape, find_units(model, input_shape)).linear_flops,
        )
        self.model_name = model_name
        self.input_shape = tuple(input_shape)
        self.input_mean = _channel_values(input_mean if input_mean is not None else getattr(model, "input_mean", None))
        self.input_std = _channel_values(input_std if input_std is not None else getattr(model, "input_std", None))
        self.gate_threshold = float(gate_threshold)  # gates open where g > this; kept in the gate biases
        self.to(next(model.parameters()).device)
        self.train(model.training)

    def _controller_flops(self) -> int:
        return sum(
            2 * (m.controller.squeeze.in_features * m.controller.squeeze.out_features
                 + m.controller.expand.in_features * m.controller.expand.out_features)
            for m in self.gate_modules()
        )

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

    def set_response_recording(self, record: bool) -> None:
        """Whether training passes measure every gated layer's responses y (only L_kl reads them;
        each costs a pass over the layer's output)."""
        for slot in self.slots:
            slot.record_response = record

    def move_gate_threshold_(self, threshold: float) -> None:
        """Open the gates where g > ``gate_threshold + threshold``, in place: every gate bias b moves
        by −``threshold``, which is exactly that (see :mod:`.threshold`)."""
        with torch.no_grad():
            for module in self.gate_modules():
                module.controller.expand.bias -= threshold
        self.gate_threshold += float(threshold)

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


def _channel_values(values) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def gate_unit(network: nn.Module, unit: Unit, config: DecoupleConfig) -> GateSlot:
    """Replace ``unit``'s conv by a :class:`GatedConv` and its BatchNorm by a :class:`GatedOutput`
    in ``network`` (in place); the slot the two share. A unit without BatchNorm gets only the
    :class:`GatedConv`, which multiplies the conv output by the gates itself."""
    slot = GateSlot()
    controller = ControllingModule(unit.in_channels, unit.out_channels, config.reduction, config.gate_bias_init,
                                   config.standardize_gate_input)
    if config.gate_bias_order == "bn_scale":
        controller.expand.bias.data.copy_(bias_by_importance(unit.bn if unit.bn is not None else unit.conv,
                                                             config.gate_bias_init))
    controller.to(unit.conv.weight.device)
    _set_submodule(network, unit.name, GatedConv(unit.conv, controller, slot, config.gate_noise_std,
                                                 config.semhash_hard_fraction, config.detach_gate_input,
                                                 gate_output=unit.bn is None, activation=unit.activation))
    if unit.bn is not None:
        _set_submodule(network, unit.bn_name, GatedOutput(unit.bn, unit.activation, slot))
    return slot


def bias_by_importance(batchnorm: nn.Module, bias_init: float) -> torch.Tensor:
    """Starting gate logits in [¼, 1]·bias_init, rising with the rank of |γ| of ``batchnorm``.

    For a unit without BatchNorm, ``batchnorm`` is its conv and the filters are ranked by the ℓ1 norm
    of their weights (the usual magnitude importance), as no γ exists.
    """
    if isinstance(batchnorm, nn.Conv2d):
        scale = batchnorm.weight.detach().abs().float().sum(dim=(1, 2, 3)).cpu()
    elif getattr(batchnorm, "weight", None) is None:  # no affine scale: no ranking to follow
        return torch.full((batchnorm.num_features,), float(bias_init))
    else:
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
    names = [unit.name for unit in units]
    unmatched = [p for p in (*config.include, *config.exclude) if not any(fnmatch.fnmatch(name, p) for name in names)]
    if unmatched:  # a mistyped pattern would otherwise gate (or leave out) other units than meant, silently
        raise UserInputError(f"no conv unit matched the include/exclude patterns {unmatched}: each pattern must match a "
                             "unit of the model; list the units with `filterscope units`.")
    chosen, not_gateable = [], []
    for unit in candidates:
        if config.include and not any(fnmatch.fnmatch(unit.name, p) for p in config.include):
            continue
        if any(fnmatch.fnmatch(unit.name, p) for p in config.exclude):
            continue
        if not unit.gateable:
            warnings.warn(f"unit {unit.name!r} cannot be gated ({unit.reason_not_gateable}); it is left ungated", stacklevel=4)
            not_gateable.append(unit)
            continue
        chosen.append(unit)
    if not chosen and not_gateable:  # blame what stops them, and say what would make them gateable
        reasons = sorted({unit.reason_not_gateable for unit in not_gateable})
        raise UserInputError(
            f"none of the {len(not_gateable)} candidate conv units can be gated ({'; '.join(reasons)}): filterscope gates "
            "convolutions with groups=1 only; include their pointwise (1x1) or full neighbours instead (include "
            "patterns; `filterscope units` marks which units are gateable)."
        )
    if not chosen:
        raise UserInputError(f"no conv unit matched the include/exclude patterns (include {list(config.include)}, "
                             f"exclude {list(config.exclude)}); list the units with `filterscope units`.")
    return chosen


def decouple(
    model: nn.Module,
    config: DecoupleConfig | None = None,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    model_name: str | None = None,
    input_mean: tuple[float, ...] | None = None,
    input_std: tuple[float, ...] | None = None,
) -> DecoupledModel:
    """A decoupled copy of ``model``; ``model`` itself is not changed (see :class:`DecoupledModel`).

    Args:
        model: any CNN that :func:`find_units` handles, usually pretrained.
        config: decoupling settings (presets resolved against ``model_name``).
        num_classes: K, the classes of the per-layer classifiers.
        input_shape: (C, H, W) of the inputs.
        model_name: the registered name, used for ``preset="auto"`` and for saving.
        input_mean, input_std: how the inputs are normalised, when not the model's own attributes.
    """
    return DecoupledModel(model, config, num_classes=num_classes, input_shape=input_shape, model_name=model_name,
                          input_mean=input_mean, input_std=input_std)
