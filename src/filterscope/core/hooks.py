"""The one way filterscope puts hooks on a model: a context manager holding removable handles.

Every hook lives only as long as the ``with`` block that registered it, and is removed when the
block ends, after success and after an error alike (as captum's ``_forward_layer_eval`` and zennit's
composites do)::

    with Hooks() as hooks:
        hooks.forward(model.fc, lambda module, inputs, output: seen.append(output))
        hooks.forward_pre(model.fc, lambda module, inputs: None)
        model(images)
    # no hook is left on the model here
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torch.utils.hooks import RemovableHandle


class Hooks:
    """Removable forward hooks, registered through this object and removed together.

    Usable as a context manager (removal on exit) or by calling :meth:`remove` in ``finally``.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def forward(self, module: nn.Module, hook: Callable[[nn.Module, tuple, Any], Any]) -> RemovableHandle:
        """``module.register_forward_hook(hook)``, remembered for removal."""
        return self._keep(module.register_forward_hook(hook))

    def forward_pre(self, module: nn.Module, hook: Callable[[nn.Module, tuple], Any]) -> RemovableHandle:
        """``module.register_forward_pre_hook(hook)``, remembered for removal."""
        return self._keep(module.register_forward_pre_hook(hook))

    def _keep(self, handle: RemovableHandle) -> RemovableHandle:
        self._handles.append(handle)
        return handle

    def remove(self) -> None:
        """Remove every hook registered so far; safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()


def hook_count(model: nn.Module) -> int:
    """How many forward and forward-pre hooks are registered on ``model`` and its submodules (for tests)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
