"""Execution engines and cost accounting for (gated) CNNs.

``flops``: static FLOP and parameter counts, per unit and per input.
"""

from filterscope.engine.flops import CostReport, UnitCost, count_costs, count_flops_reference, unit_flops

__all__ = ["CostReport", "UnitCost", "count_costs", "count_flops_reference", "unit_flops"]
from filterscope.engine.gated_flops import GatedCostModel, build_gated_cost_model

__all__ += ["GatedCostModel", "build_gated_cost_model"]
