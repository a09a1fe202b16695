"""From a decoupled model back to its units: the network without gates, and the gated units as
:class:`~filterscope.core.units.Unit` objects of the decoupled network itself.

:func:`find_units` does not see through the gate wrappers (a :class:`GatedConv` is no ``nn.Conv2d``,
and the BatchNorm sits inside a :class:`GatedOutput`), so the units of a decoupled network are found on
its unwrapped copy and then pointed back at the wrappers: hooks on those read the *gated* outputs, so a
closed filter's activation map is zero, exactly what the decoupled network computes.
"""

from __future__ import annotations

import copy
import dataclasses

from torch import nn

from ...core.errors import UserInputError
from ...core.units import Unit, find_units
from .gate import GatedConv, GatedOutput
from .model import DecoupledModel


def base_network(model: DecoupledModel) -> nn.Module:
    """A copy of the decoupled model's network with its gate wrappers taken out again (plain convs and BNs).

    Its weights are the decoupled model's (fine-tuned with the gates), not those of the network it was
    decoupled from; ``model`` itself is not changed.
    """
    network = copy.deepcopy(model.network)
    for name, module in list(network.named_modules()):
        if isinstance(module, GatedConv):
            _replace(network, name, module.conv)
        elif isinstance(module, GatedOutput):
            _replace(network, name, module.batchnorm)
    return network


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def units_named(network: nn.Module, names: list[str], input_shape: tuple[int, int, int]) -> list[Unit]:
    """The units of ``network`` (found with :func:`find_units`) called ``names``, in that order.

    Raises:
        UserInputError: a name that is no conv unit of ``network``.
    """
    by_name = {unit.name: unit for unit in find_units(network, tuple(input_shape))}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UserInputError(f"{', '.join(missing[:3])} is not a conv unit of this network; pass names from "
                             "find_units(network) (`filterscope units` lists them).")
    return [by_name[name] for name in names]


def gated_unit_views(model: DecoupledModel) -> list[Unit]:
    """The gated units as units of ``model.network``: ``conv`` is the :class:`GatedConv`, ``bn`` the
    :class:`GatedOutput` (when the unit has a BatchNorm) and ``activation`` the network's own module, so
    that :func:`filterscope.core.unit_hooks.register_unit_hooks` reads each unit's gated output."""
    plain = units_named(base_network(model), list(model.gated_units), tuple(model.input_shape))
    views = []
    for unit in plain:
        activation = None
        if unit.activation is not None and unit.activation_name:
            activation = model.network.get_submodule(unit.activation_name)
        views.append(dataclasses.replace(
            unit, conv=model.network.get_submodule(unit.name),
            bn=model.network.get_submodule(unit.bn_name) if unit.bn_name else None, activation=activation))
    return views
