"""find_units on small copies of well-known CNNs: structure, pairing, data flow, no side effects."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import toy_models
from filterscope.core.errors import UserInputError
from filterscope.core.units import Unit, describe_units, find_units
from filterscope.models import MODELS, create_model

# The models are tiny: one thread is fastest, and several threads crawl on a busy 2-core
# machine. (test_flops and test_capture import this module, so they run single-threaded too.)

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
)


def assert_no_hooks(model: nn.Module) -> None:
    for name, module in model.named_modules():
        for attribute in HOOK_DICTS:
            assert len(getattr(module, attribute, {})) == 0, f"{attribute} left on {name or 'the model'}"


def by_name(units: list[Unit]) -> dict[str, Unit]:
    return {unit.name: unit for unit in units}


def structure(unit: Unit) -> tuple:
    """Everything find_units decides about a unit, for comparing the two methods."""
    return (
        unit.name,
        unit.index,
        unit.bn_name,
        unit.activation_name,
        unit.in_channels,
        unit.out_channels,
        unit.groups,
        unit.output_size,
        unit.consumers,
        unit.consumer_channels,
        unit.gateable,
        unit.reason_not_gateable,
    )


# ----------------------------------------------------------------------------- ResNet


def test_resnet18_units_names_channels_and_sizes():
    model = toy_models.resnet18_like()
    units = find_units(model)

    expected_names = ["conv1"]
    for stage in range(1, 5):
        for block in range(2):
            expected_names += [f"layer{stage}.{block}.conv1", f"layer{stage}.{block}.conv2"]
            if stage > 1 and block == 0:
                expected_names.append(f"layer{stage}.0.downsample.0")
    assert [unit.name for unit in units] == expected_names
    assert len(units) == 20
    assert [unit.index for unit in units] == list(range(20))

    units_by_name = by_name(units)
    stem = units_by_name["conv1"]
    assert (stem.in_channels, stem.out_channels, stem.groups, stem.output_size) == (3, 8, 1, (16, 16))
    assert stem.conv is model.conv1 and stem.bn is model.bn1 and stem.activation is model.relu
    assert (stem.bn_name, stem.activation_name) == ("bn1", "relu")

    sizes = {name: unit.output_size for name, unit in units_by_name.items()}
    assert sizes["layer1.1.conv2"] == (8, 8)
    assert sizes["layer2.0.conv1"] == sizes["layer2.0.downsample.0"] == (4, 4)
    assert sizes["layer3.1.conv1"] == (2, 2)
    assert sizes["layer4.1.conv2"] == (1, 1)
    downsample = units_by_name["layer3.0.downsample.0"]
    assert (downsample.in_channels, downsample.out_channels, downsample.bn_name) == (16, 32, "layer3.0.downsample.1")
    assert downsample.activation is None and downsample.activation_name is None
    assert all(unit.gateable and unit.reason_not_gateable is None for unit in units)


def test_resnet18_reused_relu_is_matched_per_call_site():
    model = toy_models.resnet18_like()
    units_by_name = by_name(find_units(model))
    block = model.layer1[0]
    first = units_by_name["layer1.0.conv1"]
    # The block's single ReLU module follows bn1 directly ...
    assert first.bn is block.bn1 and first.activation is block.relu and first.activation_name == "layer1.0.relu"
    assert first.output_module is block.relu
    # ... but after bn2 it is applied only after the residual addition, so conv2 has no activation.
    second = units_by_name["layer1.0.conv2"]
    assert second.bn is block.bn2 and second.activation is None and second.activation_name is None
    assert second.output_module is block.bn2


def test_resnet18_consumers_follow_the_residual_stream():
    units_by_name = by_name(find_units(toy_models.resnet18_like()))
    assert units_by_name["layer1.0.conv1"].consumers == ["layer1.0.conv2"]
    # conv2's output is added to the identity and read by every conv until the next downsample.
    assert units_by_name["layer1.0.conv2"].consumers == ["layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"]
    assert units_by_name["layer1.1.conv2"].consumers == ["layer2.0.conv1", "layer2.0.downsample.0"]
    # The stem goes through the max pool and every identity shortcut of stage 1.
    assert units_by_name["conv1"].consumers == ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"]
    # In a downsampling block, the main path and the shortcut feed the same convs.
    expected = ["layer2.1.conv1", "layer3.0.conv1", "layer3.0.downsample.0"]
    assert units_by_name["layer2.0.conv2"].consumers == expected
    assert units_by_name["layer2.0.downsample.0"].consumers == expected
    assert units_by_name["layer2.0.conv2"].consumer_channels == {name: (0, 16) for name in expected}
    # The last conv feeds only the classifier.
    assert units_by_name["layer4.1.conv2"].consumers == []


def test_resnet50_bottleneck_units():
    model = toy_models.resnet50_like()
    units = find_units(model)
    assert len(units) == 1 + 3 * (3 + 4 + 6 + 3) + 4 == 53
    assert [unit.name for unit in units[:6]] == [
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.0.conv3",
        "layer1.0.downsample.0",
        "layer1.1.conv1",
    ]
    units_by_name = by_name(units)
    block = model.layer2[0]
    conv1, conv2, conv3 = (units_by_name[f"layer2.0.conv{i}"] for i in (1, 2, 3))
    # One ReLU module, three call sites: after bn1, after bn2, after the addition.
    assert conv1.activation is block.relu and conv2.activation is block.relu and conv3.activation is None
    assert [(unit.in_channels, unit.out_channels, unit.output_size) for unit in (conv1, conv2, conv3)] == [
        (16, 8, (8, 8)),
        (8, 8, (4, 4)),
        (8, 32, (4, 4)),
    ]
    assert conv3.consumers == ["layer2.1.conv1", "layer2.2.conv1", "layer2.3.conv1", "layer3.0.conv1", "layer3.0.downsample.0"]
    assert units_by_name["layer4.2.conv3"].output_size == (1, 1)
    assert all(unit.gateable for unit in units)


# ----------------------------------------------------------------------------- VGG


def test_vgg16_bn_units():
    model = toy_models.vgg16_bn_like()
    units = find_units(model)
    indices = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert [unit.name for unit in units] == [f"features.{i}" for i in indices]
    assert [unit.bn_name for unit in units] == [f"features.{i + 1}" for i in indices]
    assert [unit.activation_name for unit in units] == [f"features.{i + 2}" for i in indices]
    assert [unit.output_size[0] for unit in units] == [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    assert [unit.out_channels for unit in units] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    # A plain chain: each conv feeds the next one, through ReLU and max pooling.
    for unit, following in zip(units, units[1:]):
        assert unit.consumers == [following.name]
        assert unit.consumer_channels == {following.name: (0, unit.out_channels)}
    assert units[-1].consumers == []
    assert all(unit.gateable for unit in units)


# ----------------------------------------------------------------------------- Inception


def test_inception_consumers_and_concat_channel_slices():
    model = toy_models.inception_like()
    units = find_units(model)
    assert len(units) == 13
    units_by_name = by_name(units)
    next_block = ["inception3b.branch1.conv", "inception3b.branch2.0.conv", "inception3b.branch3.0.conv", "inception3b.branch4.1.conv"]
    # The final conv of each branch of block 3a feeds every first conv of block 3b; the
    # concatenation puts its channels at its branch's offset: 4 + 8 + 6 + 2 = 20 channels.
    final_convs = {
        "inception3a.branch1.conv": (0, 4),
        "inception3a.branch2.1.conv": (4, 12),
        "inception3a.branch3.1.conv": (12, 18),
        "inception3a.branch4.1.conv": (18, 20),
    }
    for name, channel_slice in final_convs.items():
        assert units_by_name[name].consumers == next_block
        assert units_by_name[name].consumer_channels == {consumer: channel_slice for consumer in next_block}
    # A reducing 1x1 conv feeds only its branch's 3x3 conv.
    assert units_by_name["inception3a.branch2.0.conv"].consumers == ["inception3a.branch2.1.conv"]
    # The stem feeds the four branches of block 3a, the fourth through a max pool.
    assert units_by_name["conv1.conv"].consumers == [name.replace("3b", "3a") for name in next_block]
    assert units_by_name["inception3b.branch4.1.conv"].output_size == (16, 16)
    assert units_by_name["inception3b.branch1.conv"].in_channels == 20


def test_functional_activation_is_named_but_not_a_module():
    model = toy_models.inception_like()
    unit = by_name(find_units(model))["inception3a.branch1.conv"]
    assert unit.bn is model.inception3a.branch1.bn
    assert unit.activation is None
    assert unit.activation_name == "<functional relu>"
    assert unit.output_module is unit.bn


# ----------------------------------------------------------------------------- gateable


def test_depthwise_convs_are_not_gateable():
    units = find_units(toy_models.mobilenet_like())
    assert [unit.name for unit in units] == [f"features.{i}.0" for i in range(5)]
    assert [unit.gateable for unit in units] == [True, False, True, False, True]
    assert [unit.groups for unit in units] == [1, 8, 1, 16, 1]
    assert units[1].reason_not_gateable == "depthwise convolution (groups=8)"
    assert units[3].output_size == (8, 8)
    assert all(isinstance(unit.activation, nn.ReLU6) for unit in units)


def test_grouped_conv_is_not_gateable_and_conv_without_batchnorm_is():
    model = toy_models.grouped_conv_model()
    stem, grouped, plain = find_units(model)
    assert (stem.name, grouped.name, plain.name) == ("stem", "grouped", "plain")
    assert stem.gateable and stem.consumers == ["grouped"]
    assert not grouped.gateable and grouped.reason_not_gateable == "grouped convolution (groups=4)"
    assert (grouped.in_channels, grouped.out_channels, grouped.output_size) == (8, 16, (16, 16))
    assert plain.gateable and plain.reason_not_gateable is None  # the gate multiplies the conv output itself
    # An activation right after a conv without BatchNorm is still paired.
    assert plain.bn is None and plain.activation is model.plain_relu and plain.output_module is model.plain_relu


def test_conv_output_read_twice_is_not_paired_with_its_batchnorm():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.after = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.after(self.bn(y) + y)

    first, second = find_units(TwoReaders())
    assert first.bn is None and first.gateable  # gated on its conv output, which both readers then see
    assert first.consumers == ["after"]


def test_conv2d_subclass_is_found():
    class MaskedConv2d(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 1.0

    model = nn.Sequential(MaskedConv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    (unit,) = find_units(model)
    assert (unit.name, unit.bn_name, unit.activation_name, unit.output_size) == ("0", "1", "2", (30, 30))


# ----------------------------------------------------------------------------- methods


@pytest.mark.parametrize("model_name", [name for name in toy_models.TOY_MODELS if name != "control_flow_model"])
def test_fx_and_hooks_methods_agree(model_name):
    model = toy_models.TOY_MODELS[model_name]()
    by_fx = find_units(model, method="fx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit method="hooks" does not warn
        by_hooks = find_units(model, method="hooks")
    assert [structure(unit) for unit in by_fx] == [structure(unit) for unit in by_hooks]
    assert all(a.conv is b.conv and a.bn is b.bn and a.activation is b.activation for a, b in zip(by_fx, by_hooks))


def test_control_flow_falls_back_to_hooks_with_a_warning():
    model = toy_models.control_flow_model()
    with pytest.warns(UserWarning, match="forward pass with hooks"):
        units = find_units(model)
    # Only the branch taken runs: branch_b is not a unit.
    assert [unit.name for unit in units] == ["stem", "branch_a", "head"]
    stem, branch_a, head = units
    assert stem.activation is model.relu and branch_a.activation is model.relu
    assert stem.consumers == ["branch_a", "head"]  # directly and through the residual sum
    assert branch_a.consumers == ["head"]
    assert branch_a.consumer_channels == {"head": (0, 8)}
    assert head.gateable and head.bn is None and head.activation is None and head.output_size == (32, 32)

    with pytest.raises(UserInputError, match="method='hooks'"):
        find_units(model, method="fx")


def test_no_conv_model_is_rejected():
    with pytest.raises(UserInputError, match="has no nn.Conv2d layers; filterscope analyses convolutional networks"):
        find_units(toy_models.no_conv_model())


@pytest.mark.parametrize("model_name", ["resnet18_like", "control_flow_model"])
def test_wrong_input_size_names_the_input_size(model_name):
    model = toy_models.TOY_MODELS[model_name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone, no warning about a fallback first
        with pytest.raises(UserInputError, match=r"\(1, 1, 32, 32\).*input_size="):
            find_units(model, input_size=(1, 32, 32))
    assert_no_hooks(model)


def test_bad_arguments():
    model = toy_models.grouped_conv_model()
    with pytest.raises(UserInputError, match="method must be one of"):
        find_units(model, method="trace")
    with pytest.raises(UserInputError, match="input_size must be"):
        find_units(model, input_size=(32, 32))


# ----------------------------------------------------------------------------- no side effects


@pytest.mark.parametrize("method", ["fx", "hooks"])
def test_find_units_leaves_the_model_unchanged(method):
    model = toy_models.resnet18_like()
    model.train()
    model.layer2.eval()  # mixed flags must come back exactly
    flags_before = {name: module.training for name, module in model.named_modules()}
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    rng_before = torch.get_rng_state()

    find_units(model, method=method)

    assert {name: module.training for name, module in model.named_modules()} == flags_before
    state_after = model.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_before[key], state_after[key]) for key in state_before)  # BN statistics included
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert_no_hooks(model)


def test_find_units_leaves_no_hooks_after_fallback():
    model = toy_models.control_flow_model()
    with pytest.warns(UserWarning):
        find_units(model)
    assert_no_hooks(model)
    assert model.training


def test_describe_units_table():
    table = describe_units(find_units(toy_models.grouped_conv_model()))
    lines = table.splitlines()
    assert lines[0].split() == ["#", "name", "in", "out", "HxW", "gateable"]
    assert lines[1].split() == ["0", "stem", "3", "8", "32x32", "yes"]
    assert lines[2].split()[:6] == ["1", "grouped", "8", "16", "16x16", "no"]
    assert "grouped convolution (groups=4)" in lines[2]
    assert len(lines) == 4


# How many units (one per conv) find_units finds in each built-in model.
BUILTIN_UNIT_COUNTS = {
    "digits_cnn": 4,
    "googlenet_cifar": 64,
    "resnet20": 19,
    "resnet32": 31,
    "resnet44": 43,
    "resnet56": 55,
    "resnet110": 109,
    "vgg16_slim": 13,
}


def test_every_builtin_model_has_its_unit_count_listed():
    assert sorted(MODELS) == sorted(BUILTIN_UNIT_COUNTS)


@pytest.mark.parametrize("name", sorted(BUILTIN_UNIT_COUNTS))
def test_builtin_models(name):
    model = create_model(name, num_classes=10)
    input_size = MODELS[name].input_shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # built-in models trace with fx
        units = find_units(model, input_size)
    assert len(units) == BUILTIN_UNIT_COUNTS[name]
    assert all(unit.output_size is not None for unit in units)
    assert [structure(unit) for unit in units] == [
        structure(unit) for unit in find_units(model, input_size, method="hooks")
    ]
    assert_no_hooks(model)
