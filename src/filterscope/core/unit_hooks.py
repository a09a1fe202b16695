"""Hooks that hand each unit's output, read at a chosen place, to a callback during forward passes.

Where a unit's output is read (``where``):

* ``"conv"``: the raw conv output.
* ``"bn"``: after the BatchNorm, before the activation (the conv output when the unit has
  no BatchNorm).
* ``"post"``: after the activation module. When the unit has no activation module, the
  BatchNorm (or conv) output is used; when the activation is a function call such as
  ``F.relu`` (``unit.activation_name == "<functional relu>"``) it cannot be hooked, and
  nothing is applied: the output is that of the BatchNorm.

* ``"response"``: the unit's response as one definition for every statistic: after the unit's own
  activation where it has one (a module, as ``"post"``, or a functional call such as ``F.relu``,
  which is applied here to the BatchNorm output with the function's default arguments); where it
  has none (the last conv of a residual block, whose BatchNorm output goes into the sum, or a
  linear bottleneck), the ReLU of its BatchNorm (or conv) output, so that a filter's response is
  what it contributes above zero and a strongly negative output never counts as "small".

An activation module reused at several places (torchvision's ``self.relu``) is matched to
the unit by tensor identity: its call whose input is the unit's BatchNorm output.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .errors import UserInputError
from .hooks import Hooks
from .units import Unit

__all__ = ["DEFAULT_WHERE", "WHERE", "check_units", "register_unit_hooks"]

#: Where a unit's output is read: raw conv output, after BatchNorm, after the activation.
WHERE = ("conv", "bn", "post", "response")

#: The read-out every statistic uses unless told otherwise: the unit's response (see above); chosen by
#: benchmarks/semantic_pruning/readout (it never ranks a strongly negative output as "small").
DEFAULT_WHERE = "response"


def check_units(model: nn.Module, units: Sequence[Unit], where: str) -> None:
    """Check ``where`` and that ``units`` are distinct units of ``model``.

    Raises:
        UserInputError: Unknown ``where``, no units, a name given twice, or a unit of another model.
    """
    if where not in WHERE:
        raise UserInputError(f"where must be one of {', '.join(WHERE)}, got {where!r}; pass where='response'.")
    if not units:
        raise UserInputError("no units to capture; pass the list returned by filterscope.find_units(model).")
    names = [unit.name for unit in units]
    if len(set(names)) != len(names):
        raise UserInputError("units contain the same name twice; pass each unit of find_units(model) once.")
    model_modules = {id(module) for module in model.modules()}
    for unit in units:
        if id(unit.conv) not in model_modules:
            raise UserInputError(
                f"unit {unit.name!r} does not belong to this model; call find_units on the model you capture from."
            )


def register_unit_hooks(
    hooks: Hooks, units: Sequence[Unit], where: str, on_activation: Callable[[Unit, torch.Tensor], None]
) -> None:
    """Call ``on_activation(unit, tensor)`` with each unit's output, read at ``where``, during forward passes.

    Args:
        hooks: Holds the hooks registered here; they are removed when it is.
        units: The units to read.
        where: ``"conv"``, ``"bn"``, ``"post"`` or ``"response"`` (see the module docstring).
        on_activation: Called once per unit and forward pass.
    """
    # For "post" with an activation module: the unit's BatchNorm (or conv) output, held by a
    # weak reference so that no activation map is kept, waiting for the activation call that
    # reads exactly that tensor.
    pending: dict[str, weakref.ref] = {}
    units_by_activation: dict[int, list[Unit]] = defaultdict(list)
    activation_modules: dict[int, nn.Module] = {}

    def report_output(unit: Unit) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            on_activation(unit, output)

        return hook

    def report_activated(unit: Unit, activation: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            on_activation(unit, activation(output))

        return hook

    def remember_output(unit: Unit) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            pending[unit.name] = weakref.ref(output)

        return hook

    def match_activation(module_id: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            for unit in units_by_activation[module_id]:
                reference = pending.get(unit.name)
                if reference is not None and inputs and reference() is inputs[0]:
                    del pending[unit.name]
                    on_activation(unit, output)
                    return

        return hook

    for unit in units:
        pre_activation = unit.bn if unit.bn is not None else unit.conv
        if where == "conv":
            hooks.forward(unit.conv, report_output(unit))
        elif where == "response" and unit.activation is None:
            hooks.forward(pre_activation, report_activated(unit, response_function(unit)))
        elif where == "bn" or unit.activation is None:
            hooks.forward(pre_activation, report_output(unit))
        else:
            hooks.forward(pre_activation, remember_output(unit))
            units_by_activation[id(unit.activation)].append(unit)
            activation_modules[id(unit.activation)] = unit.activation
    for module_id, module in activation_modules.items():
        hooks.forward(module, match_activation(module_id))


def response_function(unit: Unit) -> Callable[[torch.Tensor], torch.Tensor]:
    """What ``where="response"`` applies to the BatchNorm output of a unit without an activation module:
    its functional activation (``"<functional silu>"`` → ``F.silu``), or ReLU when it has none."""
    import torch.nn.functional as F

    name = unit.activation_name or ""
    if name.startswith("<functional ") and hasattr(F, name[len("<functional "):-1]):
        return getattr(F, name[len("<functional "):-1])
    return F.relu
