"""The executed network as one flat forward function: no nested module calls, no BatchNorm placeholders.

At batch 1 on the CPU a network's time is not all convolution: each ``nn.Module`` call costs about a
microsecond of Python before any work (``_call_impl``, hook checks, attribute lookups through the
containers), and a ResNet-56 makes about 230 of them per image (blocks, ``Sequential`` containers, the
``nn.Identity`` left where each BatchNorm was folded, the ReLUs, the executed convs). ``torch.fx``
traces the network once, with every executed conv kept as one call (its forward has per-input control
flow), and generates a single Python forward in which:

- the containers are gone and the ``nn.Identity`` placeholders removed;
- each ``nn.ReLU`` is the function ``torch.relu``, in place (``torch.relu_``) where the module was or
  where its input is a tensor nothing else reads that the forward itself made (an executed conv's
  output, a sum), which saves an allocation per activation;
- each executed conv is a direct call of its own ``forward``, bound to the unit, so no module call
  and no attribute walk through the containers is left on the way.

The units stay registered under their qualified names (``get_submodule`` finds them; a deep copy calls
the copied units, see :class:`FlatNetwork`), but hooks registered on an executed conv of a flattened
network do not run: the generated forward does not go through ``nn.Module.__call__``.

The time saved is the same in a dense network and a decoupled one, so it raises the decoupled one's
speedup as well as its speed; ``compile_network`` takes the same option, so a dense reference is
flattened alike. A network fx cannot trace (Python control flow on tensor values, for one) runs as it is.
"""

from __future__ import annotations

import operator

import torch
import torch.fx
from torch import nn

from .executed_unit import ExecutedUnit


class _ExecutedUnitTracer(torch.fx.Tracer):
    """Keeps every executed conv as one call (the default tracer would trace into its forward)."""

    def is_leaf_module(self, module: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(module, ExecutedUnit) or super().is_leaf_module(module, module_qualified_name)


UNIT_KEY = "executed_unit"  # node.meta key: the qualified name of the unit a direct call belongs to


class FlatNetwork(torch.fx.GraphModule):
    """The generated forward; a deep copy (``ExecutedNetwork.specialized`` makes one) binds each direct
    call to the copied unit, not to the unit it was copied from, and a pickled one (``torch.save``) is
    stored with module calls in their place and made direct again when loaded."""

    def __deepcopy__(self, memo):
        copied = super().__deepcopy__(memo)
        for node in copied.graph.nodes:
            if UNIT_KEY in node.meta:
                node.target = copied.get_submodule(node.meta[UNIT_KEY]).forward
        copied.recompile()
        return copied

    def __reduce__(self):
        graph = torch.fx.Graph()
        values: dict = {}
        for node in self.graph.nodes:
            if UNIT_KEY in node.meta:  # a bound method cannot be pickled by name: store the module call
                values[node] = graph.call_module(node.meta[UNIT_KEY], torch.fx.map_arg(node.args, values.__getitem__))
            else:
                values[node] = graph.node_copy(node, values.__getitem__)
            values[node].type = None  # annotations written as strings (``from __future__``) cannot be pickled either
        return _with_direct_unit_calls, (torch.fx.GraphModule(self, graph),)


def _with_direct_unit_calls(module: torch.fx.GraphModule) -> FlatNetwork:
    """A :class:`FlatNetwork` of ``module`` with each call of an executed conv made a direct call of its forward."""
    flat = FlatNetwork(module, module.graph)
    for node in list(flat.graph.nodes):
        if node.op == "call_module" and isinstance(flat.get_submodule(node.target), ExecutedUnit):
            _replace_call(flat.graph, node, flat.get_submodule(node.target).forward).meta[UNIT_KEY] = node.target
            flat.graph.erase_node(node)
    flat.recompile()
    return flat.eval()


def flattened(network: nn.Module) -> nn.Module:
    """``network`` as an fx ``GraphModule`` with its module calls replaced as the module docstring says, or
    ``network`` itself when fx cannot trace it. Submodules keep their qualified names."""
    try:
        graph = _ExecutedUnitTracer().trace(network)
    except Exception:  # noqa: BLE001 - fx fails in many ways; the network then runs as it is
        return network
    module = torch.fx.GraphModule(network, graph)  # made a FlatNetwork once, by _with_direct_unit_calls
    for node in list(module.graph.nodes):
        if node.op != "call_module":
            continue
        called = module.get_submodule(node.target)
        if isinstance(called, nn.Identity) and node.args:
            node.replace_all_uses_with(node.args[0])
        elif type(called) is nn.ReLU:
            in_place = called.inplace or _fresh_and_read_once(node.args[0], module)
            _replace_call(module.graph, node, torch.relu_ if in_place else torch.relu)
        else:
            continue
        module.graph.erase_node(node)
    module.graph.lint()
    return _with_direct_unit_calls(module)


def _fresh_and_read_once(value, module: torch.fx.GraphModule) -> bool:
    """Whether ``value`` is a node whose tensor is made by the forward (an executed conv's output or an
    addition, never an alias of another tensor) and read by one node only."""
    if not isinstance(value, torch.fx.Node) or len(value.users) != 1:
        return False
    if value.op == "call_module":
        return isinstance(module.get_submodule(value.target), ExecutedUnit)
    return value.op == "call_function" and value.target in (operator.add, torch.add)


def _replace_call(graph: torch.fx.Graph, node: torch.fx.Node, function) -> torch.fx.Node:
    with graph.inserting_after(node):
        call = graph.call_function(function, node.args, node.kwargs)
    node.replace_all_uses_with(call)
    return call
