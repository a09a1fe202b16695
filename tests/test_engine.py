"""The executor computes what the masked decoupled model computes, skipping the closed filters.

Checked on every built-in architecture, a torchvision-style ResNet-18, every shipped decoupled checkpoint
(random and, where the shared data is present, real inputs), layers whose gates close or open everything,
batches whose gates differ (both batch modes), calibration, and a model with its own input normalisation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import toy_models
from conftest import CIFAR_ZIP, require_shared
from filterscope.core.errors import UserInputError
from filterscope.core.hooks import hook_count
from filterscope.engine import base_network, compile_decoupled, compile_network, filter_plans
from filterscope.engine.executed_unit import ExecutedUnit
from filterscope.engine.flattening import FlatNetwork
from filterscope.methods.decoupling import DecoupleConfig, decouple, load_decoupled
from filterscope.models import MODELS, create_model

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
# Every shipped decoupled checkpoint (checkpoints/README.md); the statically pruned one has no gates.
SHIPPED_DECOUPLED = sorted(path.name for path in CHECKPOINTS.glob("*.pt") if "torchpruning" not in path.name)
RELATIVE_TOLERANCE = 1e-4
FAST = ("nchw",)  # no kernel timing; every kernel is checked by test_every_kernel_gives_the_same_outputs


def randomize_gates(decoupled, seed: int = 0, open_share: float = 0.5):
    """Gates that differ per input: random W2, biases so that about ``open_share`` of them open."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in decoupled.gate_modules():
            expand = module.controller.expand
            expand.weight.copy_(torch.randn(expand.weight.shape, generator=generator))
            expand.bias.copy_(torch.randn(expand.bias.shape, generator=generator) * 0.5
                              + torch.distributions.Normal(0, 1).icdf(torch.tensor(open_share)))
    return decoupled.eval()


def assert_same_outputs(executed, reference, images):
    with torch.no_grad():
        expected = reference(images)
    got = executed(images)
    scale = expected.abs().max().clamp_min(1e-12)
    assert float((got - expected).abs().max() / scale) < RELATIVE_TOLERANCE
    assert torch.equal(got.argmax(1), expected.argmax(1))


def decoupled_model(name: str, seed: int = 0):
    spec = MODELS[name]
    torch.manual_seed(seed)
    model = create_model(name, 10).eval()
    _randomize_batchnorm(model, seed)
    decoupled = decouple(model, DecoupleConfig(preset="resnet56"), num_classes=10, input_shape=spec.input_shape,
                         model_name=name)
    return randomize_gates(decoupled, seed), spec.input_shape


def _randomize_batchnorm(model, seed: int) -> None:
    """Running statistics other than (0, 1), so that folding them is tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_executor_gives_the_masked_models_outputs_on_every_built_in_architecture(name):
    decoupled, input_shape = decoupled_model(name)
    images = torch.randn(6, *input_shape, generator=torch.Generator().manual_seed(1))
    executed = compile_decoupled(decoupled, kernels=FAST)
    assert_same_outputs(executed, decoupled, images)  # a batch whose gates differ (union of their filters)
    for index in range(2):  # batch 1, the latency setting
        assert_same_outputs(executed, decoupled, images[index:index + 1])
    with torch.no_grad():
        decoupled(images)
    closed = sum(int((gates < 0.5).sum()) for gates in decoupled.last_gates())
    assert closed > 0, "the test's gates should close some filters"


@pytest.mark.parametrize("kernel", ["nchw", "channels_last", "packed"])
def test_every_kernel_gives_the_same_outputs(kernel):
    decoupled, input_shape = decoupled_model("resnet20", seed=11)
    images = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(11))
    executed = compile_decoupled(decoupled, kernels=(kernel,))
    assert_same_outputs(executed, decoupled, images)
    assert_same_outputs(executed, decoupled, images[:1])
    chosen = compile_decoupled(decoupled, kernels=("nchw", kernel))  # chosen per shape by timing
    assert_same_outputs(chosen, decoupled, images[:1])
    assert sum(sum(unit.kernel_choices.values()) for unit in chosen.executed_units()) > 0


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_a_flattened_executor_gives_the_masked_models_outputs_and_keeps_its_unit_names(name):
    decoupled, input_shape = decoupled_model(name, seed=13)
    images = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(13))
    executed = compile_decoupled(decoupled, kernels=FAST, flatten=True)
    assert isinstance(executed.network, FlatNetwork)
    called = _called_modules(executed.network)
    assert not any(isinstance(module, (torch.nn.Identity, torch.nn.ReLU, ExecutedUnit)) for module in called)
    assert all(isinstance(unit, ExecutedUnit) for unit in executed.executed_units())
    assert_same_outputs(executed, decoupled, images)
    assert_same_outputs(executed, decoupled, images[:1])
    assert_same_outputs(compile_network(decoupled, kernels=FAST, flatten=True), base_network(decoupled).eval(), images)


def test_a_copy_of_a_flattened_executor_runs_its_own_units():
    decoupled, input_shape = decoupled_model("resnet20", seed=13)
    image = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(13))
    executed = compile_decoupled(decoupled, kernels=FAST, flatten=True)
    closed = executed.specialized([torch.zeros(n) for n in decoupled.out_channels])
    opened = executed.specialized([torch.ones(n) for n in decoupled.out_channels])
    with torch.no_grad():
        assert not torch.allclose(closed(image), opened(image))
    assert_same_outputs(executed, decoupled, image)  # the original is untouched by its copies


def test_a_flattened_executor_is_saved_and_loaded_with_torch_save(tmp_path):
    decoupled, input_shape = decoupled_model("resnet20", seed=13)
    images = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(13))
    torch.save(compile_decoupled(decoupled, kernels=FAST), tmp_path / "executor.pt")
    loaded = torch.load(tmp_path / "executor.pt", weights_only=False)
    assert isinstance(loaded.network, FlatNetwork)
    assert not any(isinstance(module, ExecutedUnit) for module in _called_modules(loaded.network))
    assert_same_outputs(loaded, decoupled, images)


def test_a_network_fx_cannot_trace_is_executed_as_it_is_when_flattening_is_asked():
    torch.manual_seed(0)
    model = toy_models.control_flow_model().eval()
    images = torch.randn(2, 3, 32, 32)
    executed = compile_network(model, kernels=FAST, flatten=True)
    assert type(executed.network).__name__ == "ControlFlowModel"
    assert_same_outputs(executed, model, images)


def _called_modules(graph_module):
    return [graph_module.get_submodule(node.target) for node in graph_module.graph.nodes if node.op == "call_module"]


def test_networks_meeting_the_same_shapes_run_them_with_the_same_kernels():
    decoupled, input_shape = decoupled_model("resnet20", seed=12)
    image = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(12))
    first, second = (compile_decoupled(decoupled, kernels=("nchw", "channels_last")) for _ in range(2))
    first(image)
    second(image)  # its shapes were timed by the first: chosen from the process's table, not timed again
    assert [unit.kernel_choices for unit in first.executed_units()] == [unit.kernel_choices for unit in second.executed_units()]
    assert all(sum(unit.kernel_choices.values()) == 1 for unit in second.executed_units())


def test_the_executor_runs_a_torchvision_style_resnet18_with_a_shared_relu_module():
    torch.manual_seed(0)
    model = toy_models.resnet18_like().eval()
    _randomize_batchnorm(model, 0)
    decoupled = randomize_gates(decouple(model, DecoupleConfig(preset="resnet56"), num_classes=10))
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    executed = compile_decoupled(decoupled, kernels=FAST)
    assert_same_outputs(executed, decoupled, images)
    assert_same_outputs(executed, decoupled, images[:1])
    assert_same_outputs(compile_network(model, kernels=FAST), model, images)


@pytest.mark.parametrize("batch_mode", ["union", "mask"])
def test_both_batch_modes_agree_with_the_masked_model(batch_mode):
    decoupled, input_shape = decoupled_model("resnet20", seed=3)
    images = torch.randn(8, *input_shape, generator=torch.Generator().manual_seed(3))
    assert_same_outputs(compile_decoupled(decoupled, kernels=FAST, batch_mode=batch_mode), decoupled, images)


def test_a_layer_whose_gate_closes_everything_runs_no_conv_and_one_that_opens_everything_runs_whole():
    decoupled, input_shape = decoupled_model("resnet20", seed=4)
    modules = decoupled.gate_modules()
    with torch.no_grad():
        modules[0].controller.expand.bias.fill_(-1e4)  # every filter of the first gated layer closed
        modules[1].controller.expand.bias.fill_(1e4)  # every filter of the second open
    images = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(4))
    executed = compile_decoupled(decoupled, kernels=FAST)
    assert_same_outputs(executed, decoupled, images)
    assert_same_outputs(executed, decoupled, images[:1])
    calibrated = compile_decoupled(decoupled, kernels=FAST, calibration=images)
    first, second = (calibrated.network.get_submodule(name) for name in decoupled.gated_units[:2])
    assert first.fixed.numel() == 0 and first.gate is None  # silent: removed, no gate evaluated
    assert second.fixed.numel() == second.out_channels and second.gate is None  # energetic: no decision
    assert_same_outputs(calibrated, decoupled, images)


def test_calibration_removes_silent_filters_fixes_energetic_ones_and_keeps_the_outputs_on_its_data():
    decoupled, input_shape = decoupled_model("resnet20", seed=5)
    images = torch.randn(16, *input_shape, generator=torch.Generator().manual_seed(5))
    plans = filter_plans(decoupled, images)
    for plan, channels in zip(plans, decoupled.out_channels):
        together = torch.cat([plan.fixed, plan.decided, plan.removed]).sort().values
        assert torch.equal(together, torch.arange(channels))  # a partition of the layer's filters
    executed = compile_decoupled(decoupled, kernels=FAST, calibration=images)
    assert_same_outputs(executed, decoupled, images)
    for index in range(3):
        assert_same_outputs(executed, decoupled, images[index:index + 1])


def test_the_specialized_copy_of_one_path_computes_that_inputs_outputs_without_gates():
    decoupled, input_shape = decoupled_model("resnet20", seed=6)
    image = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        decoupled(image)
    gates = [g[0] for g in decoupled.last_gates()]
    static = compile_decoupled(decoupled, kernels=FAST).specialized(gates)
    assert all(unit.gate is None for unit in static.executed_units())
    assert_same_outputs(static, decoupled, image)


def test_a_model_with_its_own_input_normalisation_keeps_it_and_the_outputs():
    decoupled, input_shape = decoupled_model("digits_cnn", seed=7)
    decoupled.input_mean, decoupled.input_std = (0.3,), (0.7,)
    executed = compile_decoupled(decoupled, kernels=FAST)
    assert (executed.input_mean, executed.input_std) == ((0.3,), (0.7,))
    images = (torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(7)) - 0.3) / 0.7
    assert_same_outputs(executed, decoupled, images)


def test_compiling_leaves_the_decoupled_model_unchanged_and_no_hook_behind():
    decoupled, input_shape = decoupled_model("resnet20", seed=8)
    before = copy.deepcopy(decoupled.state_dict())
    executed = compile_decoupled(decoupled, kernels=FAST, calibration=torch.randn(4, *input_shape))
    after = decoupled.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert hook_count(decoupled) == 0 and hook_count(executed) == 0
    assert sum(isinstance(m, ExecutedUnit) for m in executed.modules()) == len(executed.unit_names)


def test_the_dense_executor_folds_batchnorm_and_gives_the_models_outputs():
    model = create_model("resnet20", 10).eval()
    _randomize_batchnorm(model, 9)
    executed = compile_network(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in executed.modules())
    assert_same_outputs(executed, model, torch.randn(5, 3, 32, 32))


def test_bad_arguments_are_named():
    decoupled, _ = decoupled_model("digits_cnn")
    with pytest.raises(UserInputError, match="batch_mode"):
        compile_decoupled(decoupled, kernels=FAST, batch_mode="groups")
    with pytest.raises(UserInputError, match="compile_network"):
        compile_decoupled(create_model("digits_cnn", 10))
    with pytest.raises(UserInputError, match="empty"):
        compile_decoupled(decoupled, kernels=FAST, calibration=[])


@pytest.mark.parametrize("checkpoint", SHIPPED_DECOUPLED)
def test_the_shipped_checkpoints_on_random_inputs(checkpoint):
    decoupled = load_decoupled(CHECKPOINTS / checkpoint)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    executed = compile_decoupled(decoupled, kernels=FAST)
    assert_same_outputs(executed, decoupled, images)
    assert_same_outputs(executed, decoupled, images[:1])


@pytest.mark.parametrize("checkpoint", SHIPPED_DECOUPLED)
def test_the_shipped_checkpoints_on_real_test_images(checkpoint):
    from filterscope.data import load_dataset

    require_shared(CIFAR_ZIP)
    cifar10_jpeg = CIFAR_ZIP
    decoupled = load_decoupled(CHECKPOINTS / checkpoint)
    test = load_dataset(cifar10_jpeg, "test")
    train = load_dataset(cifar10_jpeg, "train")
    images = torch.stack([test[i][0] for i in range(0, 10000, 50)])  # 200 test images
    calibration = torch.stack([train[i][0] for i in range(0, 50000, 50)])  # 1,000 training images
    exact = compile_decoupled(decoupled, kernels=FAST)
    assert_same_outputs(exact, decoupled, images)
    for index in range(0, 200, 20):
        assert_same_outputs(exact, decoupled, images[index:index + 1])
    calibrated = compile_decoupled(decoupled, kernels=FAST, calibration=calibration)
    with torch.no_grad():
        agree = (calibrated(images).argmax(1) == decoupled(images).argmax(1)).float().mean()
    assert agree >= 0.99  # fixed filters follow the training images; a rare test image may open another
