"""The module types a unit is made of: which modules count as a BatchNorm or an activation."""

from __future__ import annotations

from torch import nn

__all__ = ["ACTIVATION_MODULES", "BATCHNORM_MODULES", "FUNCTIONAL_ACTIVATIONS", "TRACKED_MODULES"]

#: Activation modules recognised right after a conv or its BatchNorm.
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.ELU,
    nn.Mish,
)

#: BatchNorm modules that can follow a conv (SyncBatchNorm is what DDP conversion produces).
BATCHNORM_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm2d, nn.SyncBatchNorm)

#: The modules the data-flow graph records as one operation each (never traced through).
TRACKED_MODULES: tuple[type[nn.Module], ...] = (nn.Conv2d, *BATCHNORM_MODULES, *ACTIVATION_MODULES)

#: Names (without a trailing "_" for the in-place form) of functions and tensor methods that act
#: as an activation when called functionally, e.g. torchvision's ``F.relu(x, inplace=True)``.
FUNCTIONAL_ACTIVATIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "silu", "gelu", "hardswish", "elu", "mish", "hardtanh"}
)
