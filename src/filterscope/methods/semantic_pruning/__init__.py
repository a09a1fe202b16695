"""Semantic pruning for single-class interpretability (ICLR 2020 submission), without retraining.

One idea per file:

* :mod:`.responses`: the accumulated response of every filter for every class (one streaming pass);
* :mod:`.selection`: which filters to prune for a class (network-wise or layer-wise, θ, "0-score", "median");
* :mod:`.masks`: forward hooks that zero the pruned filters' outputs;
* :mod:`.residual`: residual pruning's measurement (filters whose output the mask silences);
* :mod:`.evaluation`: many pruned networks evaluated per forward pass (recall, precision, AUC, accuracy, DP, RP);
* :mod:`.overlap`: interference between classes (overlap of kept and pruned sets, PCA of responses);
* :mod:`.sweep`: every class × mode × setting, evaluated;
* :mod:`.export`: a physically smaller network for one mask.

Example::

    model.eval()
    units = find_units(model, (3, 32, 32))
    response = accumulate_responses(model, units, train_loader, num_classes=10)
    mask = select_pruned(response, class_index=3, setting=0.25, mode="lwp")
    [evaluation] = evaluate_masks(model, units, test_loader, [mask], num_classes=10)
    evaluation.recall, evaluation.precision, evaluation.auc, evaluation.accuracy
"""

from .evaluation import FullNetworkReference, MaskEvaluation, binary_auc, evaluate_masks, full_network_reference
from .masks import mask_hooks, mask_point
from .overlap import overlap, overlap_matrices, response_pca
from .residual import ResidualAccumulator, residual_hooks
from .responses import AccumulatedResponse, accumulate_responses
from .selection import MODES, NAMED_SETTINGS, PruningMask, parse_setting, resolve_class, select_pruned
from .sweep import DEFAULT_RATIOS, SemanticPruningConfig, sweep

__all__ = [
    "DEFAULT_RATIOS",
    "MODES",
    "NAMED_SETTINGS",
    "AccumulatedResponse",
    "FullNetworkReference",
    "MaskEvaluation",
    "PruningMask",
    "ResidualAccumulator",
    "SemanticPruningConfig",
    "accumulate_responses",
    "binary_auc",
    "evaluate_masks",
    "full_network_reference",
    "mask_hooks",
    "mask_point",
    "overlap",
    "overlap_matrices",
    "parse_setting",
    "residual_hooks",
    "resolve_class",
    "response_pca",
    "select_pruned",
    "sweep",
]
