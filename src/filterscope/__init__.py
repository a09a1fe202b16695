"""filterscope: which filters does each input, and each class, of a PyTorch CNN actually use?

The public API is listed in ``__all__``; the command-line tool ``filterscope`` is a thin layer
over the same names.
"""

from .methods.influence import DecomposedLinear, InfluenceConfig, decompose, find_influential_features
from .pipelines.paths import record_checkpoint_paths
from .methods.decoupling.paths import PathRecord, collect_paths
from .methods.semantic_pruning.export import export_pruned
from .methods.semantic_pruning import SemanticPruningConfig, accumulate_responses, evaluate_masks, select_pruned
from .core.capture import accumulate_by_class, capture, run_capture
from .data import DATASETS, load_dataset, register_dataset
from .methods.decoupling import DecoupleConfig, DecoupledModel, decouple, load_decoupled, save_decoupled
from .pipelines.recipes import RECIPES, load_recipe
from .pipelines.decoupling import DecouplingRunOptions, run_decoupling
from .methods.decoupling.threshold import shift_gate_threshold, threshold_for_flops
from .core.flops import count_costs
from .core.errors import UserInputError
from .analyses.evaluate import EvalResult, evaluate, evaluate_checkpoint
from .analyses.path_embedding import PathEmbeddingConfig, PathEmbeddingResult, path_embedding
from .analyses.hopkins_tree import HopkinsTreeConfig, HopkinsTreeResult, hopkins_tree
from .analyses.hopkins import hopkins_statistic
from .analyses.receptive_fields import field_thresholds, read_units
from .analyses.occlusion import occlusion_analysis
from .analyses.dissection import dissect
from .models import MODELS, create_model, load_weights, register_model
from .report.html import build_report
from .io.run_dir import RunDir
from .training.train import TrainConfig, train
from .core.units import Unit, find_units

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "DecomposedLinear",
    "DecoupleConfig",
    "DecoupledModel",
    "DecouplingRunOptions",
    "InfluenceConfig",
    "SemanticPruningConfig",
    "accumulate_responses",
    "evaluate_masks",
    "export_pruned",
    "select_pruned",
    "collect_paths",
    "PathRecord",
    "record_checkpoint_paths",
    "decompose",
    "decouple",
    "run_decoupling",
    "RECIPES",
    "load_recipe",
    "shift_gate_threshold",
    "threshold_for_flops",
    "find_influential_features",
    "load_decoupled",
    "save_decoupled",
    "EvalResult",
    "HopkinsTreeConfig",
    "HopkinsTreeResult",
    "PathEmbeddingConfig",
    "PathEmbeddingResult",
    "hopkins_statistic",
    "hopkins_tree",
    "path_embedding",
    "MODELS",
    "RunDir",
    "TrainConfig",
    "Unit",
    "UserInputError",
    "accumulate_by_class",
    "build_report",
    "capture",
    "count_costs",
    "create_model",
    "evaluate",
    "evaluate_checkpoint",
    "find_units",
    "load_dataset",
    "load_weights",
    "register_dataset",
    "register_model",
    "run_capture",
    "train",
    "field_thresholds",
    "read_units",
    "occlusion_analysis",
    "dissect",
]
