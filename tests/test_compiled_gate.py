"""The compiled gate (engine/gate_kernel.c through engine/compiled_gate.py) decides as the torch gate does."""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest
import torch

from filterscope.core.errors import UserInputError
from filterscope.engine import compile_decoupled, compiled_gate
from filterscope.engine.gate_program import GateProgram
from filterscope.methods.decoupling.gate import ControllingModule
from test_engine import FAST, assert_same_outputs, decoupled_model

MARGIN = 1e-4  # logits closer to 0 than this may round either way; no decision is compared there


def require_compiler():
    """Skip when no C compiler builds the gate here, or fail under CI=true (CI's machine has one)."""
    reason = compiled_gate.unavailable_reason()
    if reason is not None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"compiled gate unavailable: {reason}")


def trained_like_controller(channels: int, filters: int, seed: int) -> ControllingModule:
    """A controller with random weights and standardisation statistics, as after training."""
    generator = torch.Generator().manual_seed(seed)
    controller = ControllingModule(channels, filters)
    with torch.no_grad():
        for parameter in controller.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        controller.standardize.running_mean.copy_(torch.rand(channels, generator=generator))
        controller.standardize.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return controller.eval()


def torch_logits(gate: GateProgram, unit_input: torch.Tensor, input_index) -> np.ndarray:
    columns = gate.squeeze_weight_t if input_index is None else gate.squeeze_weight_t[input_index]
    pooled = unit_input.mean(dim=(2, 3))
    return ((pooled @ columns + gate.squeeze_bias).relu() @ gate.expand_weight_t + gate.expand_bias).numpy()


def assert_decisions_match(opened: np.ndarray, logits: np.ndarray) -> None:
    clear = np.abs(logits) > MARGIN
    assert opened.shape == logits.shape and opened.dtype == np.bool_
    assert clear.mean() > 0.9
    assert np.array_equal(opened[clear], (logits > 0)[clear])


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("channels,size,decided", [(16, 32, 5), (64, 8, 64), (3, 1, 1), (33, 7, 17)])
def test_the_compiled_gate_decides_as_torch_on_every_layout(layout, channels, size, decided):
    require_compiler()
    filters = max(decided, 8)
    controller = trained_like_controller(channels, filters, seed=channels)
    chosen = torch.randperm(filters, generator=torch.Generator().manual_seed(1))[:decided].sort().values
    compiled, reference = GateProgram(controller, chosen, "compiled"), GateProgram(controller, chosen, "torch")
    for seed in range(20):
        unit_input = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(seed)).relu()
        if layout == "channels_last":
            unit_input = unit_input.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":  # every other channel of a wider tensor
            unit_input = torch.cat([unit_input, unit_input], dim=1)[:, ::2]
        logits = torch_logits(reference, unit_input, None)
        assert_decisions_match(compiled.opened(unit_input, None, None), logits)
        assert_decisions_match(reference.opened(unit_input, None, None), logits)


def test_the_compiled_gate_reads_a_compact_input_through_its_columns():
    require_compiler()
    controller = trained_like_controller(32, 32, seed=3)
    gate = GateProgram(controller, torch.arange(0, 32, 3), "compiled")
    index = torch.tensor([1, 4, 5, 9, 20, 31])
    for seed in range(10):
        compact = torch.randn(1, index.numel(), 16, 16, generator=torch.Generator().manual_seed(seed)).relu()
        logits = torch_logits(gate, compact, index)
        assert_decisions_match(gate.opened(compact, index.numpy().tobytes(), index), logits)
    nothing = torch.zeros(1, 0, 16, 16)  # the producer computed no channel: only the biases decide
    empty = torch.zeros(0, dtype=torch.long)
    assert_decisions_match(gate.opened(nothing, b"", empty), torch_logits(gate, nothing, empty))


def test_batches_and_other_dtypes_go_to_torch_with_the_same_decisions():
    require_compiler()
    controller = trained_like_controller(16, 16, seed=5)
    gate = GateProgram(controller, torch.arange(16), "compiled")
    batch = torch.randn(6, 16, 8, 8, generator=torch.Generator().manual_seed(0)).relu()
    assert_decisions_match(gate.opened(batch, None, None), torch_logits(gate, batch, None))
    wide = GateProgram(controller.double(), torch.arange(16), "compiled")
    assert_decisions_match(wide.opened(batch[:1].double(), None, None), torch_logits(wide, batch[:1].double(), None))


def test_a_copied_or_pickled_gate_rebuilds_its_caches_and_decides_alike():
    require_compiler()
    gate = GateProgram(trained_like_controller(16, 16, seed=7), torch.arange(16), "compiled")
    unit_input = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0)).relu()
    expected = gate.opened(unit_input, None, None)
    assert gate._columns and gate._function is not None
    for copied in (copy.deepcopy(gate), pickle.loads(pickle.dumps(gate))):
        assert not copied._columns and copied._function is None
        assert np.array_equal(copied.opened(unit_input, None, None), expected)


@pytest.mark.parametrize("gates", ["compiled", "torch"])
def test_the_executor_gives_the_masked_models_outputs_with_either_gate_kernel(gates):
    if gates == "compiled":
        require_compiler()
    decoupled, shape = decoupled_model("resnet20", seed=2)
    executed = compile_decoupled(decoupled, kernels=FAST, gates=gates)
    assert executed.gate_kernels() == [gates]
    images = torch.randn(5, *shape, generator=torch.Generator().manual_seed(3))
    for index in range(5):
        assert_same_outputs(executed, decoupled, images[index:index + 1])
    assert_same_outputs(executed, decoupled, images)


def test_without_a_compiler_auto_falls_back_to_torch_and_compiled_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("FILTERSCOPE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setattr(compiled_gate, "_LOADED", {})
    monkeypatch.setattr(compiled_gate.shutil, "which", lambda name: None)
    assert compiled_gate.gate_function() is None
    assert "no C compiler 'no-such-compiler-here'" in compiled_gate.unavailable_reason()
    decoupled, _ = decoupled_model("digits_cnn")
    assert compile_decoupled(decoupled, kernels=FAST).gate_kernels() == ["torch"]
    with pytest.raises(UserInputError, match="install a C compiler"):
        compile_decoupled(decoupled, kernels=FAST, gates="compiled")
    with pytest.raises(UserInputError, match="gates must be one of auto, compiled, torch"):
        compile_decoupled(decoupled, kernels=FAST, gates="numpy")


def test_the_library_is_built_once_into_the_cache_folder_and_a_failed_build_leaves_no_file(monkeypatch, tmp_path):
    require_compiler()
    monkeypatch.setenv("FILTERSCOPE_CACHE", str(tmp_path))
    compiler = compiled_gate._default_compiler()
    library = compiled_gate._build(compiler)
    assert library.parent == tmp_path / "compiled" and library.suffix == ".so"
    stamp = library.stat().st_mtime_ns
    assert compiled_gate._build(compiler) == library and library.stat().st_mtime_ns == stamp
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C")
    monkeypatch.setattr(compiled_gate, "SOURCE", broken)
    with pytest.raises(RuntimeError, match="failed to build broken.c"):
        compiled_gate._build(compiler)
    assert sorted(path.name for path in (tmp_path / "compiled").iterdir()) == [library.name]
