"""``compile_decoupled(model)``: a decoupled network that skips its closed filters instead of zeroing them.

The decoupled model as trained runs every filter and multiplies the closed ones by 0, so it is slower
than the dense network it came from. The executor built here computes only what the gates leave open:

- at build time each BatchNorm is folded into its conv (:mod:`.folding`), each gate is reduced to the
  filters it decides per input (:mod:`.gate_program`), and, given calibration data, filters that were
  never open over it (*silent*) are removed and filters always open (*energetic*) are computed without
  a gate decision; a layer with no filter left to decide evaluates no gate at all;
- at run time each unit computes only its open filters, and a conv fed directly by a gated conv reads
  only the channels that conv computed (:mod:`.links`, :mod:`.executed_unit`).

Without calibration data every gate is evaluated at run time and the executor computes exactly what the
decoupled model computes on any input. With it, the fixed filters follow what the calibration data did;
on inputs where a silent filter would have opened (or an energetic one closed) the outputs differ, which
:func:`fixed_filter_disagreement` measures.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.batches import split_batch
from ..core.eval_mode import evaluation_mode
from ..core.errors import UserInputError
from ..core.units import Unit, find_units
from ..methods.decoupling.model import DecoupledModel
from ..methods.decoupling.unwrap import base_network
from .executed_unit import ChannelLink, ExecutedUnit
from .flattening import flattened
from .folding import folded_weights
from . import compiled_gate
from .gate_program import GATE_KERNELS, GateProgram
from .kernels import DEFAULT_KERNELS, KERNELS
from .links import direct_links, record_dataflow

BATCH_MODES = ("union", "mask")


@dataclass
class FilterPlan:
    """Which filters of one gated unit are computed always, never, or as the gate decides."""

    fixed: torch.Tensor  # energetic: always computed
    decided: torch.Tensor  # dynamic: the gate decides per input
    removed: torch.Tensor  # silent: never computed


class ExecutedNetwork(nn.Module):
    """The network with every conv unit replaced by an :class:`ExecutedUnit`; same outputs as its source.

    Attributes:
        network: the rebuilt network (a copy; the source model is never changed).
        unit_names: every conv unit, in execution order; ``gated_units`` the gated ones.
        plans: per gated unit, its :class:`FilterPlan`.
        input_mean, input_std: the source model's input normalisation (a record; inputs come normalised).
    """

    def __init__(self, network: nn.Module, unit_names: list[str], gated_units: list[str],
                 plans: dict[str, FilterPlan], input_mean=None, input_std=None):
        super().__init__()
        self.network = network
        self.unit_names = unit_names
        self.gated_units = gated_units
        self.plans = plans
        self.input_mean, self.input_std = input_mean, input_std
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def executed_units(self) -> list[ExecutedUnit]:
        return [self.network.get_submodule(name) for name in self.unit_names]

    def gate_kernels(self) -> list[str]:
        """The gate kernels in use (names in :data:`.gate_program.GATE_KERNELS`), empty when no gate is evaluated."""
        return sorted({unit.gate.kernel for unit in self.executed_units() if unit.gate is not None})

    def set_batch_mode(self, batch_mode: str) -> None:
        """``"union"``: a batch computes the union of its inputs' open filters; ``"mask"``: every kept filter."""
        _check_batch_mode(batch_mode)
        for unit in self.executed_units():
            unit.batch_mode = batch_mode

    def specialized(self, gates: list[torch.Tensor]) -> "ExecutedNetwork":
        """A copy with each gated unit's open filters fixed to ``gates`` (one 0/1 vector per gated unit) and
        no gate evaluated: the statically shaped network of one calculation path (the executor's ceiling)."""
        if len(gates) != len(self.gated_units):
            raise UserInputError(f"specialized() needs one gate vector per gated unit ({len(self.gated_units)}), "
                                 f"got {len(gates)}.")
        copied = copy.deepcopy(self)
        for name, gate in zip(self.gated_units, gates):
            unit = copied.network.get_submodule(name)
            unit.fixed = torch.as_tensor(gate).flatten().gt(0.5).nonzero().flatten()
            unit.gate = None
        return copied


@torch.no_grad()
def filter_plans(model: DecoupledModel, calibration: Iterable | torch.Tensor | None = None) -> list[FilterPlan]:
    """Per gated unit, the filters to fix, decide and remove: from how often each gate opened over
    ``calibration`` (a tensor of inputs or an iterable of batches), or all decided when it is None."""
    if calibration is None:
        return [FilterPlan(torch.empty(0, dtype=torch.long), torch.arange(n), torch.empty(0, dtype=torch.long))
                for n in model.out_channels]
    opened = [torch.zeros(n, dtype=torch.long) for n in model.out_channels]
    seen = 0
    with evaluation_mode(model):  # every module's own training flag comes back afterwards
        for batch in ([calibration] if isinstance(calibration, torch.Tensor) else calibration):
            images = batch if isinstance(batch, torch.Tensor) else split_batch(batch)[0]
            model(images)
            for count, gates in zip(opened, model.last_gates()):
                count += gates.gt(0.5).sum(0).cpu()
            seen += images.shape[0]
    if seen == 0:
        raise UserInputError("the calibration data is empty; pass some inputs, or calibration=None to decide every gate.")
    return [FilterPlan(fixed=(count == seen).nonzero().flatten(), decided=((count > 0) & (count < seen)).nonzero().flatten(),
                       removed=(count == 0).nonzero().flatten()) for count in opened]


def compile_decoupled(model: DecoupledModel, calibration: Iterable | torch.Tensor | None = None, *,
                      batch_mode: str = "union", kernels: tuple[str, ...] = DEFAULT_KERNELS,
                      flatten: bool = True, gates: str = "auto") -> ExecutedNetwork:
    """An :class:`ExecutedNetwork` computing what ``model`` computes in evaluation, skipping closed filters.

    Args:
        model: a decoupled model (not changed).
        calibration: inputs (a tensor, or an iterable of batches) over which silent filters are removed
            and energetic ones fixed; None evaluates every gate at run time (exact on any input).
        batch_mode: ``"union"`` or ``"mask"``, see :class:`ExecutedUnit`.
        kernels: the convolution kernels each unit chooses from per shape, by timing (:mod:`.kernels`);
            ``("nchw",)`` runs PyTorch's default path only.
        flatten: run the network as one fx-generated forward without module calls (:mod:`.flattening`;
            a network fx cannot trace runs as it is); False keeps the network's own modules (hooks on
            the executed convs then run).
        gates: how each gate is evaluated (:mod:`.gate_program`): ``"compiled"`` (one C call at batch 1, built
            with the system's C compiler), ``"torch"``, or ``"auto"``: compiled where it builds, torch otherwise.
    """
    if not isinstance(model, DecoupledModel):
        raise UserInputError(f"compile_decoupled takes a DecoupledModel, got {type(model).__name__}; "
                             "use compile_network for a model without gates.")
    _check_batch_mode(batch_mode)
    _check_kernels(kernels)
    _check_cpu(model)
    gate_kernel = _gate_kernel(gates)
    plans = dict(zip(model.gated_units, filter_plans(model, calibration)))
    controllers = {name: module.controller for name, module in zip(model.gated_units, model.gate_modules())}
    network = base_network(model).eval()
    return _build(network, model.input_shape, plans, controllers, batch_mode, kernels, flatten, model.input_mean,
                  model.input_std, gate_kernel)


def compile_network(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32), *,
                    kernels: tuple[str, ...] = DEFAULT_KERNELS, flatten: bool = True) -> ExecutedNetwork:
    """A network without gates run by the same executor (BatchNorm folded, every filter computed, the same
    kernel choice): the dense model timed through the same code path as a decoupled one. Given a decoupled
    model, its network without the gates (and its own input shape) is compiled."""
    _check_kernels(kernels)
    _check_cpu(model)
    if isinstance(model, DecoupledModel):
        input_shape = model.input_shape
        model = base_network(model)
    network = copy.deepcopy(model).eval()
    return _build(network, input_shape, {}, {}, "union", kernels, flatten, getattr(model, "input_mean", None),
                  getattr(model, "input_std", None))


def _build(network: nn.Module, input_shape, plans: dict[str, FilterPlan], controllers: dict[str, nn.Module],
           batch_mode: str, kernels: tuple[str, ...], flatten: bool, input_mean, input_std,
           gate_kernel: str = "torch") -> ExecutedNetwork:
    units = find_units(network, input_shape)
    dataflow = record_dataflow(network, input_shape)
    links = direct_links(dataflow, units)
    _check_foldable(units, dataflow)
    output_links = {producer: ChannelLink() for producer in set(links.values()) if producer in plans}
    for unit in units:
        weight, bias = folded_weights(unit.conv, unit.bn)
        plan = plans.get(unit.name)
        gate = None
        if plan is not None and plan.decided.numel() > 0:
            gate = GateProgram(controllers[unit.name], plan.decided, gate_kernel)
        fixed = plan.fixed if plan is not None else torch.arange(unit.out_channels)
        producer = links.get(unit.name)
        executed = ExecutedUnit(unit.conv, weight, bias, fixed, gate, input_link=output_links.get(producer),
                                output_link=output_links.get(unit.name), batch_mode=batch_mode, kernels=kernels)
        _set_submodule(network, unit.name, executed)
        if unit.bn_name is not None:
            _set_submodule(network, unit.bn_name, nn.Identity())
    return ExecutedNetwork(flattened(network) if flatten else network, [u.name for u in units], list(plans), plans, input_mean, input_std)


def _check_foldable(units: list[Unit], dataflow) -> None:
    calls: dict[str, int] = {}
    for op in dataflow.ops:
        if op.kind == "module":
            calls[op.name] = calls.get(op.name, 0) + 1
    for unit in units:
        for name in (unit.name, unit.bn_name):
            if name is not None and calls.get(name, 0) > 1:
                raise UserInputError(f"module {name!r} is called {calls[name]} times in one forward pass; the executor "
                                     "folds each conv with its BatchNorm, so give each call site its own module.")


def _check_cpu(model: nn.Module) -> None:
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise UserInputError(f"the executor runs on the CPU (it reads each gate's decision there) and the model is on "
                             f"{device}; move it with model.cpu() first.")


def _check_kernels(kernels: tuple[str, ...]) -> None:
    unknown = [name for name in kernels if name not in KERNELS]
    if unknown or not kernels:
        raise UserInputError(f"kernels must be a non-empty choice of {', '.join(KERNELS)}, got {list(kernels)}.")


def _gate_kernel(gates: str) -> str:
    """The gate kernel ``gates`` resolves to ("auto" or a name in GATE_KERNELS); refused, with the reason and the
    fix, when "compiled" cannot be built here."""
    if gates not in ("auto", *GATE_KERNELS):
        raise UserInputError(f"gates must be one of auto, {', '.join(GATE_KERNELS)}, got {gates!r}.")
    if gates == "torch":
        return gates
    reason = compiled_gate.unavailable_reason()
    if reason is None:
        return "compiled"
    if gates == "compiled":
        raise UserInputError(f"the compiled gate cannot be built here ({reason}); install a C compiler "
                             "(or set CC to one), or pass gates='torch'.")
    return "torch"


def _check_batch_mode(batch_mode: str) -> None:
    if batch_mode not in BATCH_MODES:
        raise UserInputError(f"batch_mode must be one of {', '.join(BATCH_MODES)}, got {batch_mode!r}.")


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
