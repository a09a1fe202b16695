"""Built-in models. Importing this package registers them all."""

from . import cifar_googlenet
from . import cifar_resnet
from . import cifar_vgg
from . import digits_cnn  # noqa: F401  (registration)
from .checkpoint import load_weights, read_checkpoint, save_atomically
from .registry import MODELS, ModelSpec, create_model, model_spec, register_model

__all__ = [
    "MODELS",
    "ModelSpec",
    "create_model",
    "load_weights",
    "model_spec",
    "read_checkpoint",
    "register_model",
    "save_atomically",
]
