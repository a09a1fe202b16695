"""Class-specific influential features (Badola et al., "Decomposing the Deep"), one idea per file.

* :mod:`.final_layer`: the model's final linear layer, found by what runs;
* :mod:`.accumulation`: Algorithm 1's streaming pass (top-``k1`` counts per class and feature);
* :mod:`.criteria`: which features of a class are influential (the registry :data:`CRITERIA`);
* :mod:`.features`: the analysis, ``find_influential_features(model, loader, config) -> InfluenceResult``;
* :mod:`.decomposed`: the final layer decomposed per class, and its evaluation;
* :mod:`.ablation`: the Gaussian-noise ablation (the paper's Table 8);
* :mod:`.measures`: feature maps, Jaccard overlap of the sets, mutual information;
* :mod:`.csg`: the class-specific-gates baseline.
"""

from .ablation import evaluate_with_noise, noise_ablation, replace_with_noise
from .accumulation import LABEL_SOURCES, InfluenceAccumulator, InfluenceStatistics, accumulate_influence, top_k_indices
from .criteria import CRITERIA, criterion_scores, l1_frequency, mean_contribution, register_criterion, select_top
from .csg import CSGConfig, CSGResult, ClassSpecificGates, csg_index_sets, csg_sets_above, train_csg
from .decomposed import (
    DecomposedLinear,
    DecompositionResult,
    accuracy_of_head,
    decompose,
    evaluate_decomposition,
    retrain_head,
)
from .features import InfluenceConfig, InfluenceResult, find_influential_features, run
from .final_layer import FINAL, FinalLayer, find_final_linear
from .measures import feature_maps, jaccard_overlap, mutual_information

__all__ = [
    "CRITERIA",
    "FINAL",
    "LABEL_SOURCES",
    "CSGConfig",
    "CSGResult",
    "ClassSpecificGates",
    "DecomposedLinear",
    "DecompositionResult",
    "FinalLayer",
    "InfluenceAccumulator",
    "InfluenceConfig",
    "InfluenceResult",
    "InfluenceStatistics",
    "accumulate_influence",
    "accuracy_of_head",
    "criterion_scores",
    "csg_index_sets",
    "csg_sets_above",
    "decompose",
    "evaluate_decomposition",
    "evaluate_with_noise",
    "feature_maps",
    "find_final_linear",
    "find_influential_features",
    "jaccard_overlap",
    "l1_frequency",
    "mean_contribution",
    "mutual_information",
    "noise_ablation",
    "register_criterion",
    "replace_with_noise",
    "retrain_head",
    "run",
    "select_top",
    "top_k_indices",
    "train_csg",
]
