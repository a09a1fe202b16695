"""``with evaluation_mode(model):`` runs ``model`` in evaluation mode and gives every submodule its own flag back.

``model.train(was_training)`` afterwards is not the same: it sets *every* submodule to the top module's flag,
so a wrapper in training mode around a model in evaluation mode (or a model with some submodules frozen in
evaluation mode) would come out changed. This restores each module's flag as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in evaluation mode for the block; every module's training flag is restored after it
    (after an error too)."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
