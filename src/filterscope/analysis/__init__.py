"""Analyses over a data set, each one streaming pass reducing to small sums.

- ``paths``: calculation paths and filter states of a decoupled network.
- ``influence``: class-specific influential features at the penultimate layer (Badola et al.).
- ``decomposed``: the final linear layer decomposed into per-class subspaces.
- ``csg``: the class-specific gates baseline (Liang et al., 2020).
- ``semantic_pruning``: per-class accumulated responses, pruning for one class without retraining
  (network-wise and layer-wise), direct and residual pruning, masked evaluation, interference.
- ``prune_export``: a network pruned for one class, made physically smaller.
"""
