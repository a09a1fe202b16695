"""filterscope: which filters does each input, and each class, of a PyTorch CNN actually use?

The public API is listed in ``__all__``; the command-line tool ``filterscope`` is a thin layer
over the same names.
"""

from .analysis.decomposed import DecomposedLinear, decompose
from .analysis.influence import InfluenceConfig, find_influential_features
from .analysis.checkpoint_paths import record_checkpoint_paths
from .analysis.paths import PathRecord, collect_paths
from .analysis.prune_export import export_pruned
from .analysis.semantic_pruning import SemanticPruningConfig, accumulate_responses, evaluate_masks, select_pruned
from .capture import accumulate_by_class, capture, run_capture
from .data import DATASETS, load_dataset, register_dataset
from .decouple import DecoupleConfig, DecoupledModel, decouple, load_decoupled, save_decoupled
from .decouple.recipes import RECIPES, load_recipe
from .decouple.run import DecouplingRunOptions, run_decoupling
from .decouple.threshold import shift_gate_threshold, threshold_for_flops
from .engine import count_costs
from .errors import UserInputError
from .evaluate import EvalResult, evaluate, evaluate_checkpoint
from .models import MODELS, create_model, load_weights, register_model
from .report.html import build_report
from .rundir import RunDir
from .train import TrainConfig, train
from .units import Unit, find_units

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
]
