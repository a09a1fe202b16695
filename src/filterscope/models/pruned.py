"""Checkpoints of a registered model with fewer filters in some convs (a statically pruned network).

Format: ``{"model": registered name, "num_classes": K, "channels": {conv name: filters kept}, "state_dict"}``
(as written by ``benchmarks/static_pruning/torch_pruning_resnet20.py`` from a Torch-Pruning run). The
registered model is built, each listed conv is given that many filters, with its BatchNorm and the input
of every conv that reads its output alone, and the state dict is loaded strictly: the network a pruning
library left, rebuilt without that library.
"""

from __future__ import annotations

import os

from torch import nn

from ..core.errors import UserInputError
from ..core.gated_flops import exclusive_input_sources
from ..core.units import find_units
from .checkpoint import check_state_dict_fits, read_checkpoint
from .registry import create_model, model_spec

PRUNED_FORMATS = ("filterscope.pruned.v1", "filterscope.torch_pruned.v1")


def is_pruned_checkpoint(payload: dict) -> bool:
    return payload.get("format") in PRUNED_FORMATS


def load_pruned(path: str | os.PathLike) -> nn.Module:
    """The statically pruned network saved in ``path``, in evaluation mode."""
    payload = read_checkpoint(path)
    if not is_pruned_checkpoint(payload) or not {"model", "channels", "state_dict"} <= set(payload):
        raise UserInputError(f"{str(path)!r} is not a pruned-model checkpoint ({' or '.join(PRUNED_FORMATS)} with "
                             "model, channels and state_dict).")
    model = create_model(payload["model"], int(payload.get("num_classes", 10)))
    shrink_filters(model, {name: int(kept) for name, kept in payload["channels"].items()},
                   model_spec(payload["model"]).input_shape)
    check_state_dict_fits(model, payload["state_dict"], str(path))  # one sentence, not load_state_dict's traceback
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def shrink_filters(model: nn.Module, channels: dict[str, int], input_shape=(3, 32, 32)) -> nn.Module:
    """Give each conv named in ``channels`` that many filters (in place, freshly initialised), with its
    BatchNorm and the input channels of the convs that read its output alone: the shapes for a pruned state dict."""
    units = {unit.name: unit for unit in find_units(model, input_shape)}
    sources = exclusive_input_sources(list(units.values()), {})
    unknown = sorted(set(channels) - set(units))
    if unknown:
        raise UserInputError(f"no conv named {', '.join(unknown)} in {type(model).__name__}; list them with `filterscope units`.")
    for name, kept in channels.items():
        unit = units[name]
        _replace(model, name, _conv_like(unit.conv, unit.conv.in_channels, kept))
        if unit.bn is not None:
            _replace(model, unit.bn_name, nn.BatchNorm2d(kept, eps=unit.bn.eps, momentum=unit.bn.momentum))
        for consumer in unit.consumers:
            if sources.get(consumer) is None or len(sources[consumer]) != 1:
                raise UserInputError(f"{consumer!r} reads {name!r} together with other channels; only a conv that reads "
                                     "one pruned conv's output alone can be rebuilt here.")
            reader = model.get_submodule(consumer)
            _replace(model, consumer, _conv_like(reader, kept, reader.out_channels))
    return model


def _conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     bias=conv.bias is not None)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
