"""The executor that skips closed filters of a decoupled model, and latency measurement (to come).

FLOP counting lives in :mod:`filterscope.core.flops` and :mod:`filterscope.core.gated_flops`.
"""
