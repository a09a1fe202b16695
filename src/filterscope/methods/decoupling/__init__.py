"""Network decoupling (Li et al., ECCV 2020): gates that choose, per input, which filters run."""

from .config import DecoupleConfig
from .gate import ControllingModule, GatedConv, GatedOutput
from .objective import DecouplingObjective
from .presets import PRESETS
from .semhash import saturating_sigmoid, semhash
from .model import DecoupledModel, decouple
from .checkpoint import load_decoupled, save_decoupled

__all__ = [
    "ControllingModule",
    "DecoupleConfig",
    "DecoupledModel",
    "DecouplingObjective",
    "GatedConv",
    "GatedOutput",
    "PRESETS",
    "decouple",
    "load_decoupled",
    "save_decoupled",
    "saturating_sigmoid",
    "semhash",
]
