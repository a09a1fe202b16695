"""The executor that skips closed filters of a decoupled model, and latency measurement.

``compile_decoupled(model, calibration)`` returns an :class:`ExecutedNetwork` with the decoupled model's
outputs that computes only the open filters; ``compile_network(model)`` runs a model without gates through
the same code (BatchNorm folded), the fair dense reference. FLOP counting lives in
:mod:`filterscope.core.flops` and :mod:`filterscope.core.gated_flops`.
"""

from .kernels import DEFAULT_KERNELS, KERNELS
from .executor import (BATCH_MODES, ExecutedNetwork, FilterPlan, base_network, compile_decoupled, compile_network,
                       filter_plans)

__all__ = ["BATCH_MODES", "DEFAULT_KERNELS", "KERNELS", "ExecutedNetwork", "FilterPlan", "base_network", "compile_decoupled", "compile_network",
           "filter_plans"]
