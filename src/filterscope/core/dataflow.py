"""The data-flow graph of a model: which operation reads which tensor, recorded in one of two ways.

1. ``torch.fx`` traces the model into a graph (with every ``Conv2d``, ``BatchNorm2d`` and
   activation module kept as a leaf), run once on the probe input to learn every tensor's shape
   (:func:`dataflow_by_fx`).
2. When the model cannot be traced (data-dependent control flow such as ``if x.sum() > 0``),
   the same graph is recorded instead while the model runs once on the probe input: forward
   hooks on the conv, BatchNorm and activation modules plus a
   :class:`~torch.overrides.TorchFunctionMode` that sees every tensor operation in between
   (additions, concatenations, pooling, ...). Tensors are matched by identity, so a ReLU
   module called at several places is matched per call site (:func:`dataflow_by_hooks`). Only
   the branches taken for that input are seen, which is why a warning names this fallback.

Both end in the same small graph: a list of :class:`Operation` records and the shape of every
tensor value, from which :func:`filterscope.core.units.find_units` pairs convs with their
BatchNorm and activation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import Hooks
from .layer_kinds import ACTIVATION_MODULES, FUNCTIONAL_ACTIVATIONS, TRACKED_MODULES
from .probing import ProbeRunError

__all__ = ["Dataflow", "Operation", "activation_name_of", "dataflow_by_fx", "dataflow_by_hooks", "is_conv_operation"]

_CAT_FUNCTIONS = frozenset({"cat", "concat", "concatenate"})


@dataclass(eq=False)
class Operation:
    """One executed operation: a call of a tracked module, a function or a tensor method.

    ``inputs`` and ``outputs`` are keys of tensor values (fx nodes or integers); a value
    modified in place gets a new key, so the graph stays acyclic.
    """

    kind: str  # "module", "function" or "method"
    name: str  # qualified module name, or function / method name
    module: nn.Module | None
    inputs: list[Hashable]
    outputs: list[Hashable]
    cat_inputs: list[Hashable] | None = None  # the tensors of a torch.cat, in order
    cat_dim: int | None = None


@dataclass
class Dataflow:
    """The operations of one forward pass in execution order, and the shape of every tensor value."""

    ops: list[Operation]
    shapes: dict[Hashable, tuple[int, ...]]  # shape of every tensor value seen


def is_conv_operation(op: Operation) -> bool:
    """Whether ``op`` is a call of an ``nn.Conv2d`` module."""
    return op.kind == "module" and isinstance(op.module, nn.Conv2d)


def activation_name_of(op: Operation) -> str | None:
    """The name to record if ``op`` is an activation, else None."""
    if op.kind == "module":
        return op.name if isinstance(op.module, ACTIVATION_MODULES) else None
    base_name = op.name.rstrip("_")
    if base_name in FUNCTIONAL_ACTIVATIONS:
        return f"<functional {base_name}>"
    return None


def _flatten_values(structure: Any, is_value: Callable[[Any], bool]) -> list[Any]:
    """Every value for which ``is_value`` holds inside nested tuples, lists and dicts, in order."""
    found: list[Any] = []

    def visit(item: Any) -> None:
        if is_value(item):
            found.append(item)
        elif isinstance(item, (tuple, list)):
            for element in item:
                visit(element)
        elif isinstance(item, dict):
            for element in item.values():
                visit(element)

    visit(structure)
    return found


def _cat_arguments(args: tuple, kwargs: dict) -> tuple[Any, int]:
    """The tensor sequence and dim of a ``torch.cat(tensors, dim)`` call."""
    tensors = args[0] if args else kwargs.get("tensors", ())
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return tensors, dim if isinstance(dim, int) else 0


# --------------------------------------------------------------------------------------
# Method 1: torch.fx
# --------------------------------------------------------------------------------------


class _UnitTracer(torch.fx.Tracer):
    """An fx tracer that keeps every conv, BatchNorm and activation module as one call,
    including user subclasses of them (which the default tracer would trace through)."""

    def is_leaf_module(self, module: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(module, TRACKED_MODULES):
            return True
        return super().is_leaf_module(module, module_qualified_name)


def dataflow_by_fx(model: nn.Module, example_input: torch.Tensor) -> Dataflow:
    """Trace ``model`` with fx and run the graph once to learn every tensor's shape.

    Raises:
        torch.fx.proxy.TraceError (or any error of tracing): the model cannot be traced.
        ProbeRunError: the traced graph did not run on ``example_input``.
    """
    tracer = _UnitTracer()
    graph = tracer.trace(model)
    # The GraphModule holds references to the model's own submodules; the model is untouched.
    graph_module = torch.fx.GraphModule(model, graph)

    shapes: dict[Hashable, tuple[int, ...]] = {}

    class _ShapeRecorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            result = super().run_node(node)
            if isinstance(result, torch.Tensor):
                shapes[node] = tuple(result.shape)
            return result

    try:
        _ShapeRecorder(graph_module).run(example_input)
    except Exception as error:  # noqa: BLE001 - any failure of the run is reported the same way
        raise ProbeRunError(error) from error

    def is_node(item: Any) -> bool:
        return isinstance(item, torch.fx.Node)

    ops: list[Operation] = []
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        inputs = _flatten_values((node.args, node.kwargs), is_node)
        cat_inputs = cat_dim = None
        if node.op == "call_module":
            kind, name, module = "module", str(node.target), model.get_submodule(str(node.target))
        elif node.op == "call_function":
            kind, name, module = "function", getattr(node.target, "__name__", str(node.target)), None
            if name in _CAT_FUNCTIONS:
                tensors, cat_dim = _cat_arguments(node.args, node.kwargs)
                cat_inputs = _flatten_values(tensors, is_node)
        else:  # call_method
            kind, name, module = "method", str(node.target), None
        ops.append(Operation(kind, name, module, inputs, [node], cat_inputs, cat_dim))
    return Dataflow(ops, shapes)


# --------------------------------------------------------------------------------------
# Method 2: one forward pass with hooks and a TorchFunctionMode
# --------------------------------------------------------------------------------------


def _version_of(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place version counter (None for inference tensors, which have none)."""
    try:
        return tensor._version
    except RuntimeError:
        return None


class _DataflowRecorder(TorchFunctionMode):
    """Records the data-flow graph of one forward pass by tensor identity.

    Tracked modules (conv, BatchNorm, activation) are recorded as one operation each through
    forward pre-hooks and hooks; every other tensor operation is recorded by this mode. All
    tensors seen are kept alive until the pass ends so that ``id()`` cannot be reused.
    """

    def __init__(self, module_names: dict[int, str]):
        super().__init__()
        self.ops: list[Operation] = []
        self.shapes: dict[Hashable, tuple[int, ...]] = {}
        self._module_names = module_names
        self._value_key: dict[int, int] = {}  # id(tensor) -> key of its current value
        self._alive: list[torch.Tensor] = []
        self._next_key = 0
        self._module_depth = 0  # > 0 while inside a tracked module: its inner ops are not recorded
        self._module_inputs: list[Hashable] = []
        self._paused = False  # set while our own hooks touch tensors

    # values -----------------------------------------------------------------------------
    def _new_value(self, tensor: torch.Tensor) -> int:
        key = self._next_key
        self._next_key += 1
        self._value_key[id(tensor)] = key
        self._alive.append(tensor)
        self.shapes[key] = tuple(tensor.shape)
        return key

    def _current_value(self, tensor: torch.Tensor) -> int:
        key = self._value_key.get(id(tensor))
        return self._new_value(tensor) if key is None else key

    # torch functions --------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._paused or self._module_depth > 0:
            return func(*args, **kwargs)
        # Inside this handler the mode is switched off, so touching tensors here is not recorded.
        input_tensors = _flatten_values((args, kwargs), lambda item: isinstance(item, torch.Tensor))
        versions = [_version_of(tensor) for tensor in input_tensors]
        inputs = [self._current_value(tensor) for tensor in input_tensors]
        result = func(*args, **kwargs)

        output_tensors = _flatten_values(result, lambda item: isinstance(item, torch.Tensor))
        output_ids = {id(tensor) for tensor in output_tensors}
        # An in-place change (x.relu_(), x[...] = y) makes a new value of the same tensor.
        for tensor, version in zip(input_tensors, versions):
            if _version_of(tensor) != version and id(tensor) not in output_ids:
                output_tensors.append(tensor)
                output_ids.add(id(tensor))
        if output_tensors:
            name = getattr(func, "__name__", str(func))
            cat_inputs = cat_dim = None
            if name in _CAT_FUNCTIONS:
                tensors, cat_dim = _cat_arguments(args, kwargs)
                cat_inputs = [
                    self._value_key[id(tensor)]
                    for tensor in _flatten_values(tensors, lambda item: isinstance(item, torch.Tensor))
                ]
            outputs = [self._new_value(tensor) for tensor in output_tensors]
            # Functions and tensor methods look alike here; only their names matter below.
            self.ops.append(Operation("function", name, None, inputs, outputs, cat_inputs, cat_dim))
        return result

    # tracked modules --------------------------------------------------------------------
    def before_module(self, module: nn.Module, args: tuple) -> None:
        self._paused = True
        try:
            if self._module_depth == 0:
                tensors = _flatten_values(args, lambda item: isinstance(item, torch.Tensor))
                self._module_inputs = [self._current_value(tensor) for tensor in tensors]
            self._module_depth += 1
        finally:
            self._paused = False

    def after_module(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._paused = True
        try:
            self._module_depth -= 1
            if self._module_depth == 0:
                tensors = _flatten_values(output, lambda item: isinstance(item, torch.Tensor))
                outputs = [self._new_value(tensor) for tensor in tensors]
                name = self._module_names.get(id(module), type(module).__name__)
                self.ops.append(Operation("module", name, module, self._module_inputs, outputs))
        finally:
            self._paused = False

    def release(self) -> None:
        """Drop every tensor kept alive for identity matching."""
        self._alive.clear()
        self._value_key.clear()


def dataflow_by_hooks(model: nn.Module, example_input: torch.Tensor) -> Dataflow:
    """Record the data-flow graph while the model runs once on ``example_input``.

    Raises:
        ProbeRunError: the model raised on ``example_input``.
    """
    module_names = {id(module): name for name, module in model.named_modules()}
    recorder = _DataflowRecorder(module_names)
    with Hooks() as hooks:
        try:
            for module in model.modules():
                if isinstance(module, TRACKED_MODULES):
                    hooks.forward_pre(module, recorder.before_module)
                    hooks.forward(module, recorder.after_module)
            try:
                with recorder:
                    model(example_input)
            except Exception as error:  # noqa: BLE001 - any failure of the run is reported the same way
                raise ProbeRunError(error) from error
            return Dataflow(recorder.ops, recorder.shapes)
        finally:
            recorder.release()

