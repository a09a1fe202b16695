"""FLOPs of one input under its gates: what a channel-skipping executor has to compute.

A gated unit computes only the filters its gate left on. A unit whose every input channel comes
from exactly one unit output (no addition of two sources; concatenations allowed) also skips the
input channels that those units' gates switched off, since those channels are zero. Costs are
counted as :mod:`torch.utils.flop_counter` counts them (2 FLOPs per multiply-add of convs and
linear layers), plus the controlling modules' own linear layers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from .units import Unit
from .flops import unit_flops


@dataclass
class GatedCostModel:
    """Per-input FLOPs of a decoupled network as a function of its gates.

    Attributes:
        unit_names: every conv unit of the network, in execution order.
        dense_unit_flops: each unit's conv FLOPs with every channel on.
        out_channels / in_channels: each unit's channel counts.
        output_gate: for each unit, the index of its gated layer, or None when ungated.
        input_sources: for each unit, ``[(gated layer index or None, start, stop), ...]`` covering its
            input channels exactly once, or None when its inputs cannot be skipped.
        other_flops: FLOPs outside the units (linear layers), always spent.
        gate_flops: FLOPs of the controlling modules, spent at inference.
    """

    unit_names: list[str]
    dense_unit_flops: list[int]
    out_channels: list[int]
    in_channels: list[int]
    output_gate: list[int | None]
    input_sources: list[list[tuple[int | None, int, int]] | None]
    other_flops: int
    gate_flops: int

    @property
    def dense_flops(self) -> int:
        """FLOPs of the original network (no gates, no controllers)."""
        return int(sum(self.dense_unit_flops) + self.other_flops)

    def layer_flops(self) -> list[float]:
        """For each gated layer, the FLOPs its gates control with every other gate on: its own unit's
        conv FLOPs and the share of each consumer's whose input channels come from it alone. The
        per-input FLOPs are linear in each layer's active share with these slopes wherever no
        unit is gated on both its output and its input (a product of two shares there)."""
        number = 1 + max((g for g in self.output_gate if g is not None), default=-1)
        slopes = [0.0] * number
        for index, dense in enumerate(self.dense_unit_flops):
            if self.output_gate[index] is not None:
                slopes[self.output_gate[index]] += dense
            for layer, start, stop in self.input_sources[index] or []:
                if layer is not None:
                    slopes[layer] += dense * (stop - start) / self.in_channels[index]
        return slopes

    def per_input(self, gates: list[torch.Tensor]) -> torch.Tensor:
        """FLOPs of each input, shape (B,), from the hard gates of every gated layer (each (B, N_l))."""
        active = [g.detach().gt(0.5).sum(1).double().cpu() for g in gates]
        batch = gates[0].shape[0]
        total = torch.full((batch,), float(self.other_flops + self.gate_flops), dtype=torch.float64)
        for index, dense in enumerate(self.dense_unit_flops):
            out_fraction: torch.Tensor | float = 1.0
            if self.output_gate[index] is not None:
                out_fraction = active[self.output_gate[index]] / self.out_channels[index]
            in_fraction: torch.Tensor | float = 1.0
            sources = self.input_sources[index]
            if sources is not None:
                # A source (layer, start, stop) fills the consumer's input channels [start, stop) with
                # all of that layer's output channels, so its active count is the layer's.
                channels = torch.zeros(batch, dtype=torch.float64)
                for layer, start, stop in sources:
                    channels += (stop - start) if layer is None else active[layer]
                in_fraction = channels / self.in_channels[index]
            total += dense * out_fraction * in_fraction
        return total


def exclusive_input_sources(units: list[Unit], gated_index: dict[str, int]) -> dict[str, list[tuple[int | None, int, int]] | None]:
    """For each unit, the unit outputs that fill its input channels exactly once, or None.

    Inputs can be skipped only when every input channel comes from exactly one known unit output
    channel: slices known, disjoint, and covering all input channels. Two sources on the same
    channels (a residual addition) or an unknown layout mean the channel is not zero when one
    gate is off.
    """
    incoming: dict[str, list[tuple[str, tuple[int, int] | None]]] = defaultdict(list)
    for producer in units:
        for consumer in producer.consumers:
            incoming[consumer].append((producer.name, producer.consumer_channels.get(consumer)))
    result: dict[str, list[tuple[int | None, int, int]] | None] = {}
    for unit in units:
        sources = incoming.get(unit.name, [])
        if not sources or any(span is None for _, span in sources):
            result[unit.name] = None
            continue
        spans = sorted((span[0], span[1], name) for name, span in sources)  # type: ignore[index]
        covered = 0
        exclusive = True
        for start, stop, _ in spans:
            if start != covered:
                exclusive = False
                break
            covered = stop
        if not exclusive or covered != unit.in_channels:
            result[unit.name] = None
            continue
        result[unit.name] = [(gated_index.get(name), start, stop) for start, stop, name in spans]
    return result


def build_gated_cost_model(units: list[Unit], gated_names: list[str], controller_flops: int, other_flops: int) -> GatedCostModel:
    """The cost model of a network whose units ``gated_names`` are gated.

    Args:
        units: every unit of the *undecoupled* network (with output sizes).
        gated_names: the gated units, in gate-layer order.
        controller_flops: FLOPs of all controlling modules for one input.
        other_flops: FLOPs outside the units (the linear layers).
    """
    gated_index = {name: i for i, name in enumerate(gated_names)}
    sources = exclusive_input_sources(units, gated_index)
    return GatedCostModel(
        unit_names=[u.name for u in units],
        dense_unit_flops=[int(unit_flops(u)) for u in units],
        out_channels=[u.out_channels for u in units],
        in_channels=[u.in_channels for u in units],
        output_gate=[gated_index.get(u.name) for u in units],
        input_sources=[sources[u.name] for u in units],
        other_flops=int(other_flops),
        gate_flops=int(controller_flops),
    )
