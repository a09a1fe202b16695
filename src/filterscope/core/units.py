"""Units: each ``nn.Conv2d`` of a model with the BatchNorm and activation that follow it.

A :class:`Unit` is what filterscope gates, counts, captures and prunes. :func:`find_units`
finds them in any ``nn.Module`` without special layers:

1. ``torch.fx`` traces the model into a graph (with every ``Conv2d``, ``BatchNorm2d`` and
   activation module kept as a leaf). Walking that graph pairs each conv with the BatchNorm
   that alone reads its output and with the activation that alone reads the BatchNorm's
   output, and follows the data flow from each conv to the convs that read it.
2. When the model cannot be traced (data-dependent control flow such as ``if x.sum() > 0``),
   the same graph is recorded instead while the model runs once on a random input: forward
   hooks on the conv, BatchNorm and activation modules plus a
   :class:`~torch.overrides.TorchFunctionMode` that sees every tensor operation in between
   (additions, concatenations, pooling, ...). Tensors are matched by identity, so a ReLU
   module called at several places is matched per call site. Only the branches taken for
   that input are seen, which is why a warning names this fallback.

Both ways end in the same small data-flow graph (:class:`_Op` records) and the same pairing
code, and both take the spatial output size of every conv from a real forward pass.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import UserInputError

__all__ = [
    "ACTIVATION_MODULES",
    "BATCHNORM_MODULES",
    "Unit",
    "describe_units",
    "find_units",
    "probe_input",
    "probe_mode",
]

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

# Names (without a trailing "_" for the in-place form) of functions and tensor methods that
# act as an activation when called functionally, e.g. torchvision's ``F.relu(x, inplace=True)``.
_FUNCTIONAL_ACTIVATIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "silu", "gelu", "hardswish", "elu", "mish", "hardtanh"}
)

_CAT_FUNCTIONS = frozenset({"cat", "concat", "concatenate"})

_METHODS = ("auto", "fx", "hooks")


@dataclass(eq=False)
class Unit:
    """One convolution of a model, with the BatchNorm and activation applied right after it.

    Attributes:
        name: Qualified name of the conv module in the model, e.g. ``"layer1.0.conv1"``.
        conv: The ``nn.Conv2d`` module itself (the caller's module, not a copy).
        bn: The BatchNorm2d that alone reads the conv's output, if any.
        activation: The activation module (``nn.ReLU`` etc.) that alone reads the BatchNorm's
            output (or the conv's, when there is no BatchNorm); ``None`` when the activation is
            a function call such as ``F.relu`` or when there is none.
        bn_name: Qualified name of ``bn``.
        activation_name: Qualified name of ``activation``; for a functional activation a
            marker such as ``"<functional relu>"`` (with ``activation`` left ``None``).
        in_channels: Input channels of the conv.
        out_channels: Output channels (filters) of the conv.
        groups: The conv's ``groups``.
        output_size: Spatial ``(height, width)`` of the conv output for the input size given
            to :func:`find_units`; ``None`` only for units built by hand.
        consumers: Names of the units whose conv reads this unit's output, directly or through
            element-wise operations, pooling, additions, concatenations, BatchNorm,
            activations, indexing and the like, in execution order.
        gateable: Whether the unit's filters can be switched off one by one by a gate; False
            for depthwise or grouped convs and for convs without a following BatchNorm2d.
        reason_not_gateable: Why ``gateable`` is False, as a short phrase; ``None`` otherwise.
        index: Position of the conv in execution order.
        consumer_channels: For each consumer, the half-open slice ``(start, stop)`` of the
            consumer's input channels that carry this unit's output channels (after a
            concatenation they sit at an offset); ``None`` when the channel layout could not
            be followed (a reshape, a channel shuffle, a reduction over channels).
    """

    name: str
    conv: nn.Conv2d = field(repr=False)
    bn: nn.BatchNorm2d | None = field(repr=False)
    activation: nn.Module | None = field(repr=False)
    bn_name: str | None
    activation_name: str | None
    in_channels: int
    out_channels: int
    groups: int
    output_size: tuple[int, int] | None
    consumers: list[str]
    gateable: bool
    reason_not_gateable: str | None
    index: int
    consumer_channels: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    @property
    def output_module(self) -> nn.Module:
        """The last of conv, BatchNorm and activation module present: where post-activation outputs are read."""
        if self.activation is not None:
            return self.activation
        if self.bn is not None:
            return self.bn
        return self.conv


# --------------------------------------------------------------------------------------
# Running the model once on a probe input, without changing it
# --------------------------------------------------------------------------------------


def _check_input_size(input_size: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 3
        or not all(isinstance(size, int) and size > 0 for size in input_size)
    ):
        raise UserInputError(
            f"input_size must be (channels, height, width) as three positive integers, got {input_size!r}; "
            "pass e.g. input_size=(3, 32, 32)."
        )
    return tuple(input_size)  # type: ignore[return-value]


def probe_input(model: nn.Module, input_size: tuple[int, int, int]) -> torch.Tensor:
    """A batch-1 random input of ``input_size`` on the model's device and in its floating dtype.

    Uses its own seeded generator, so the global random state is left alone and repeated
    calls give the same input.

    Args:
        model: The model the input is for.
        input_size: ``(channels, height, width)``.

    Returns:
        A tensor of shape ``(1, *input_size)``.
    """
    input_size = _check_input_size(input_size)
    device, dtype = torch.device("cpu"), torch.get_default_dtype()
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            device, dtype = tensor.device, tensor.dtype
            break
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, *input_size), generator=generator).to(device=device, dtype=dtype)


@contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Run the model in eval mode without gradients, then restore every module's training flag.

    Eval mode keeps BatchNorm running statistics untouched and lets a batch of one through;
    the flags are restored in ``finally``, after success and after an error alike.

    Args:
        model: The model about to be run on a probe input.
    """
    training_flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in training_flags:
            module.training = training


def _run_failed(model: nn.Module, input_size: tuple[int, int, int], error: Exception) -> UserInputError:
    message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    return UserInputError(
        f"{type(model).__name__} did not run on a random input of shape (1, {', '.join(map(str, input_size))}) "
        f"({message}); pass the input size it expects as input_size=(channels, height, width), e.g. "
        f"input_size=({first_conv.in_channels}, 32, 32) for CIFAR-sized or ({first_conv.in_channels}, 224, 224) "
        "for ImageNet-sized inputs."
    )


# --------------------------------------------------------------------------------------
# The data-flow graph both tracing methods produce
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Op:
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
class _Dataflow:
    ops: list[_Op]
    shapes: dict[Hashable, tuple[int, ...]]  # shape of every tensor value seen


def _is_conv_op(op: _Op) -> bool:
    return op.kind == "module" and isinstance(op.module, nn.Conv2d)


def _activation_name_of(op: _Op) -> str | None:
    """The name to record if ``op`` is an activation, else None."""
    if op.kind == "module":
        return op.name if isinstance(op.module, ACTIVATION_MODULES) else None
    base_name = op.name.rstrip("_")
    if base_name in _FUNCTIONAL_ACTIVATIONS:
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
        if isinstance(module, (nn.Conv2d, *BATCHNORM_MODULES, *ACTIVATION_MODULES)):
            return True
        return super().is_leaf_module(module, module_qualified_name)


def _dataflow_by_fx(model: nn.Module, example_input: torch.Tensor) -> _Dataflow:
    """Trace ``model`` with fx and run the graph once to learn every tensor's shape.

    Raises:
        torch.fx.proxy.TraceError (or any error of tracing): the model cannot be traced.
        _RunError: the traced graph did not run on ``example_input``.
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
        raise _RunError(error) from error

    def is_node(item: Any) -> bool:
        return isinstance(item, torch.fx.Node)

    ops: list[_Op] = []
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
        ops.append(_Op(kind, name, module, inputs, [node], cat_inputs, cat_dim))
    return _Dataflow(ops, shapes)


class _RunError(Exception):
    """The model (or its traced graph) raised while running on the probe input."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


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
        self.ops: list[_Op] = []
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
            self.ops.append(_Op("function", name, None, inputs, outputs, cat_inputs, cat_dim))
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
                self.ops.append(_Op("module", name, module, self._module_inputs, outputs))
        finally:
            self._paused = False

    def release(self) -> None:
        """Drop every tensor kept alive for identity matching."""
        self._alive.clear()
        self._value_key.clear()


def _dataflow_by_hooks(model: nn.Module, example_input: torch.Tensor) -> _Dataflow:
    """Record the data-flow graph while the model runs once on ``example_input``.

    Raises:
        _RunError: the model raised on ``example_input``.
    """
    module_names = {id(module): name for name, module in model.named_modules()}
    recorder = _DataflowRecorder(module_names)
    handles = []
    try:
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, *BATCHNORM_MODULES, *ACTIVATION_MODULES)):
                handles.append(module.register_forward_pre_hook(recorder.before_module))
                handles.append(module.register_forward_hook(recorder.after_module))
        try:
            with recorder:
                model(example_input)
        except Exception as error:  # noqa: BLE001 - any failure of the run is reported the same way
            raise _RunError(error) from error
        return _Dataflow(recorder.ops, recorder.shapes)
    finally:
        for handle in handles:
            handle.remove()
        recorder.release()


# --------------------------------------------------------------------------------------
# From the data-flow graph to units
# --------------------------------------------------------------------------------------


def _units_from_dataflow(dataflow: _Dataflow) -> list[Unit]:
    """Pair every conv with its BatchNorm and activation and follow its output to the next convs."""
    ops, shapes = dataflow.ops, dataflow.shapes
    users: dict[Hashable, list[_Op]] = defaultdict(list)
    for op in ops:
        for value in dict.fromkeys(op.inputs):  # an op reading a value twice is one user
            users[value].append(op)

    def single_user(value: Hashable) -> _Op | None:
        value_users = users.get(value, [])
        return value_users[0] if len(value_users) == 1 else None

    # The first call of each conv module defines its unit (a conv called twice is rare).
    first_calls: dict[int, _Op] = {}
    for op in ops:
        if _is_conv_op(op) and id(op.module) not in first_calls:
            first_calls[id(op.module)] = op

    units: list[Unit] = []
    for index, op in enumerate(first_calls.values()):
        conv: nn.Conv2d = op.module  # type: ignore[assignment]
        output = op.outputs[0]
        bn = activation = bn_name = activation_name = None

        follower = single_user(output)
        if follower is not None and follower.kind == "module" and isinstance(follower.module, BATCHNORM_MODULES):
            bn, bn_name = follower.module, follower.name
            follower = single_user(follower.outputs[0])
        if follower is not None:
            activation_name = _activation_name_of(follower)
            if activation_name is not None and follower.kind == "module":
                activation = follower.module

        reasons = []
        if conv.groups > 1:
            kind = "depthwise" if conv.groups == conv.in_channels == conv.out_channels else "grouped"
            reasons.append(f"{kind} convolution (groups={conv.groups})")
        if bn is None:
            reasons.append("no BatchNorm2d directly after the convolution")

        shape = shapes.get(output)
        units.append(
            Unit(
                name=op.name,
                conv=conv,
                bn=bn,
                activation=activation,
                bn_name=bn_name,
                activation_name=activation_name,
                in_channels=conv.in_channels,
                out_channels=conv.out_channels,
                groups=conv.groups,
                output_size=(shape[-2], shape[-1]) if shape is not None and len(shape) >= 2 else None,
                consumers=[],
                gateable=not reasons,
                reason_not_gateable="; ".join(reasons) or None,
                index=index,
            )
        )

    unit_index = {unit.name: unit.index for unit in units}
    for unit, op in zip(units, first_calls.values()):
        consumer_channels = _follow_to_convs(op.outputs[0], unit.out_channels, users, shapes)
        ordered = sorted(consumer_channels, key=lambda name: unit_index.get(name, len(units)))
        unit.consumers = ordered
        unit.consumer_channels = {name: consumer_channels[name] for name in ordered}
    return units


def _follow_to_convs(
    start: Hashable,
    out_channels: int,
    users: dict[Hashable, list[_Op]],
    shapes: dict[Hashable, tuple[int, ...]],
) -> dict[str, tuple[int, int] | None]:
    """Walk the data flow from a conv output to the convs that read it.

    Along the way the channel offset of the conv's channels is tracked: unchanged through
    operations that keep the channel count (element-wise, pooling, BatchNorm, additions),
    shifted by a concatenation along channels, and lost (None) through anything else.

    Returns:
        Consumer conv name -> ``(start, stop)`` of its input channels holding the conv's
        output, or None where the layout was lost.
    """
    found: dict[str, tuple[int, int] | None] = {}
    seen: set[tuple[Hashable, int | None]] = set()
    stack: list[tuple[Hashable, int | None]] = [(start, 0)]
    while stack:
        value, offset = stack.pop()
        if (value, offset) in seen:
            continue
        seen.add((value, offset))
        for op in users.get(value, []):
            if _is_conv_op(op):
                channel_slice = None if offset is None else (offset, offset + out_channels)
                if op.name not in found or found[op.name] is None:
                    found[op.name] = channel_slice
                continue
            for output in op.outputs:
                stack.append((output, _offset_after(op, value, offset, output, shapes)))
    return found


def _offset_after(
    op: _Op,
    value: Hashable,
    offset: int | None,
    output: Hashable,
    shapes: dict[Hashable, tuple[int, ...]],
) -> int | None:
    """Channel offset of ``value``'s channels inside ``output`` of ``op``, or None if unknown."""
    if offset is None:
        return None
    input_shape, output_shape = shapes.get(value), shapes.get(output)
    if input_shape is None or output_shape is None or len(input_shape) < 2 or len(output_shape) < 2:
        return None
    if op.cat_inputs is not None and op.cat_dim is not None:
        dim = op.cat_dim % len(output_shape)
        if dim != 1:
            return offset if output_shape[1] == input_shape[1] else None
        position = op.cat_inputs.index(value)
        preceding = [shapes.get(earlier) for earlier in op.cat_inputs[:position]]
        if any(shape is None or len(shape) < 2 for shape in preceding):
            return None
        return offset + sum(shape[1] for shape in preceding)  # type: ignore[index]
    if len(output_shape) == len(input_shape) and output_shape[1] == input_shape[1]:
        return offset
    return None


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def find_units(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 32, 32),
    *,
    method: str = "auto",
) -> list[Unit]:
    """Find every ``nn.Conv2d`` of a model, in execution order, with its BatchNorm and activation.

    The model is run once on a random batch-1 input in eval mode without gradients; its
    parameters, buffers, hooks and training flags are left exactly as they were.

    Args:
        model: Any ``nn.Module`` built with ``nn.Conv2d`` layers.
        input_size: ``(channels, height, width)`` of one input, used for the probe forward
            pass that measures every conv's output size.
        method: ``"fx"`` traces the model with ``torch.fx``; ``"hooks"`` records one forward
            pass instead (works with data-dependent control flow, but sees only the branches
            that input takes); ``"auto"`` tries fx and falls back to hooks with a warning.

    Returns:
        The units, in execution order (``unit.index`` is the position).

    Raises:
        UserInputError: The model has no ``nn.Conv2d``, does not run on ``input_size``, cannot
            be traced with ``method="fx"``, or ``method`` is unknown.
    """
    if method not in _METHODS:
        raise UserInputError(f"method must be one of {', '.join(_METHODS)}, got {method!r}; pass method='auto'.")
    input_size = _check_input_size(input_size)
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        raise UserInputError(
            f"{type(model).__name__} has no nn.Conv2d layers; filterscope analyses convolutional networks, "
            "so pass a model built with nn.Conv2d layers."
        )

    example_input = probe_input(model, input_size)
    with probe_mode(model):
        dataflow = None
        fallback_reason = None
        if method in ("auto", "fx"):
            try:
                dataflow = _dataflow_by_fx(model, example_input)
            except _RunError as run_error:
                # The traced graph did not run: either the input size is wrong (then the
                # model fails by itself too, reported below) or the trace is unfaithful.
                fallback_reason = f"its traced graph failed to run: {run_error.error}"
            except Exception as trace_error:  # noqa: BLE001 - fx raises many error types
                fallback_reason = f"{type(trace_error).__name__}: {trace_error}"
                if method == "fx":
                    raise UserInputError(
                        f"torch.fx cannot trace {type(model).__name__} ({_first_line(fallback_reason)}); "
                        "pass method='hooks' (or 'auto') to find units from one forward pass instead."
                    ) from trace_error
        if dataflow is None:
            try:
                dataflow = _dataflow_by_hooks(model, example_input)
            except _RunError as run_error:
                raise _run_failed(model, input_size, run_error.error) from run_error.error
            if method == "fx":  # the model runs, but not its fx graph
                raise UserInputError(
                    f"torch.fx traced {type(model).__name__} but {_first_line(fallback_reason)}; "
                    "pass method='hooks' (or 'auto') to find units from one forward pass instead."
                )
            if fallback_reason is not None:
                warnings.warn(
                    f"find_units: torch.fx could not trace {type(model).__name__} ({_first_line(fallback_reason)}); "
                    "units were found from one forward pass with hooks instead, so only the branches taken "
                    "for that input are seen.",
                    stacklevel=2,
                )
    return _units_from_dataflow(dataflow)


def _first_line(text: str | None, limit: int = 200) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:limit] if lines else "unknown reason"


def describe_units(units: Iterable[Unit]) -> str:
    """Format units as a small text table (index, name, channels, output size, gateable).

    Args:
        units: Units from :func:`find_units`.

    Returns:
        The table, one line per unit under a header line, without a trailing newline.
    """
    rows = [("#", "name", "in", "out", "HxW", "gateable")]
    for unit in units:
        size = f"{unit.output_size[0]}x{unit.output_size[1]}" if unit.output_size else "?"
        gateable = "yes" if unit.gateable else f"no ({unit.reason_not_gateable})"
        rows.append((str(unit.index), unit.name, str(unit.in_channels), str(unit.out_channels), size, gateable))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    right_aligned = {0, 2, 3, 4}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
