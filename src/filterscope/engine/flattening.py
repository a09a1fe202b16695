"""The executed network as one flat forward function: no nested module calls, no BatchNorm placeholders.

At batch 1 on the CPU a network's time is not all convolution: each ``nn.Module`` call costs about a
microsecond of Python before any work (``_call_impl``, hook checks), and a ResNet-56 makes about 230 of
them per image (blocks, ``Sequential`` containers, the ``nn.Identity`` left where each BatchNorm was
folded, the executed convs). ``torch.fx`` traces the network once, with every executed conv kept as one
call (its forward has per-input control flow), and generates a single Python forward in which the
containers are gone and the placeholders removed. The time saved is the same in a dense network and a
decoupled one, so it would raise the decoupled one's speedup as well as its speed; ``compile_network``
takes the same option, so a dense reference is flattened alike. It is an option (``flatten=True``,
the ``flat`` route of ``filterscope bench``), not the default, until it measures faster on a quiet machine:
two A/B runs on a ResNet-56 with both cores busy gave dense 8997 vs 9764 µs and 8875 vs 8912, the
executor 6892 vs 7134 and 7103 vs 7050 (flattened vs not), within the noise.

A network fx cannot trace (Python control flow on tensor values, for one) runs as it is.
"""

from __future__ import annotations

import torch.fx
from torch import nn

from .executed_unit import ExecutedUnit


class _ExecutedUnitTracer(torch.fx.Tracer):
    """Keeps every executed conv as one call (the default tracer would trace into its forward)."""

    def is_leaf_module(self, module: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(module, ExecutedUnit) or super().is_leaf_module(module, module_qualified_name)


def flattened(network: nn.Module) -> nn.Module:
    """``network`` as an fx ``GraphModule`` with its ``nn.Identity`` calls removed, or ``network`` itself when
    fx cannot trace it. Submodules keep their qualified names (``get_submodule`` finds the same units)."""
    try:
        graph = _ExecutedUnitTracer().trace(network)
    except Exception:  # noqa: BLE001 - fx fails in many ways; the network then runs as it is
        return network
    module = torch.fx.GraphModule(network, graph)
    for node in list(module.graph.nodes):
        if node.op == "call_module" and isinstance(module.get_submodule(node.target), nn.Identity) and node.args:
            node.replace_all_uses_with(node.args[0])
            module.graph.erase_node(node)
    module.graph.lint()
    module.recompile()
    return module.eval()
