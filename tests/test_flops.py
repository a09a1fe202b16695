"""Static FLOP and parameter counts against torch.utils.flop_counter and hand arithmetic."""

from __future__ import annotations

import json
import warnings

import pytest
from torch import nn

import toy_models
from filterscope.core.flops import CostReport, UnitCost, count_costs, count_flops_reference, unit_flops
from filterscope.core.errors import UserInputError
from filterscope.core.units import Unit, find_units
from test_units import assert_no_hooks


@pytest.mark.parametrize("model_name", list(toy_models.TOY_MODELS))
def test_total_flops_match_flop_counter_mode(model_name):
    model = toy_models.TOY_MODELS[model_name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # control_flow_model warns about the hooks fallback
        report = count_costs(model)
    assert report.total_flops == count_flops_reference(model)
    assert report.total_flops == report.conv_flops + report.linear_flops
    assert report.conv_flops == sum(cost.flops for cost in report.units)
    assert report.total_params == sum(parameter.numel() for parameter in model.parameters())
    assert_no_hooks(model)
    assert model.training


def test_flops_by_hand_for_a_small_model():
    model = toy_models.grouped_conv_model()  # 3x32x32 input
    report = count_costs(model)
    stem = 2 * 8 * 3 * 9 * 32 * 32  # Conv2d(3, 8, 3, padding=1), no bias
    grouped = 2 * 16 * (8 // 4) * 9 * 16 * 16  # Conv2d(8, 16, 3, stride=2, groups=4)
    plain = 2 * 12 * 16 * 1 * 16 * 16  # Conv2d(16, 12, 1); its bias adds are not counted
    linear = 2 * 12 * 10  # Linear(12, 10) on one row
    assert [(cost.name, cost.flops) for cost in report.units] == [("stem", stem), ("grouped", grouped), ("plain", plain)]
    assert report.conv_flops == stem + grouped + plain == 688128
    assert report.linear_flops == linear
    assert report.total_flops == 688368
    # Per-unit parameters: conv weight (+ bias) and BatchNorm weight and bias.
    assert [cost.params for cost in report.units] == [8 * 3 * 9 + 2 * 8, 16 * 2 * 9 + 2 * 16, 12 * 16 + 12]
    assert report.total_params == sum(cost.params for cost in report.units) + 12 * 10 + 10


def test_linear_flops_count_every_row_and_call():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.token_head = nn.Linear(4, 5, bias=False)

        def forward(self, x):
            tokens = self.bn(self.conv(x)).flatten(2).transpose(1, 2)  # (1, 6*6, 4)
            return self.token_head(tokens).mean(1) + self.token_head(tokens[:, :3]).mean(1)

    model = TwoHeads()
    report = count_costs(model, input_size=(3, 8, 8))
    assert report.linear_flops == 2 * (36 + 3) * 4 * 5
    assert report.conv_flops == 2 * 4 * 3 * 9 * 36
    assert report.total_flops == count_flops_reference(model, (3, 8, 8))


def test_count_costs_accepts_units_and_serialises():
    model = toy_models.vgg16_bn_like()
    units = find_units(model)
    report = count_costs(model, units=units)
    assert isinstance(report, CostReport) and all(isinstance(cost, UnitCost) for cost in report.units)
    assert [cost.name for cost in report.units] == [unit.name for unit in units]
    # VGG convs have a bias: weight + bias + BatchNorm weight and bias.
    assert report.units[0].params == 8 * 3 * 9 + 8 + 2 * 8
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"units", "total_flops", "total_params", "conv_flops", "linear_flops"}
    assert data["units"][0] == {"name": "features.0", "flops": 2 * 8 * 3 * 9 * 32 * 32, "params": 240}
    assert data["total_flops"] == report.total_flops


def test_unit_flops_with_active_channels():
    stem, grouped, plain = find_units(toy_models.grouped_conv_model())
    dense = 2 * 8 * 3 * 9 * 32 * 32
    assert unit_flops(stem) == dense
    assert unit_flops(stem, active_out=4) == dense / 2
    assert unit_flops(stem, active_in=1, active_out=2) == dense / 3 / 4
    assert unit_flops(stem, active_in=0) == 0
    assert unit_flops(stem, active_out=2.5) == pytest.approx(dense * 2.5 / 8)  # an average over inputs
    # Grouped conv: active input channels are assumed spread evenly over the groups.
    assert unit_flops(grouped, active_in=4, active_out=8) == 2 * 16 * 2 * 9 * 16 * 16 / 4
    with pytest.raises(UserInputError, match="active_out=9 is outside"):
        unit_flops(stem, active_out=9)
    with pytest.raises(UserInputError, match="active_in=-1"):
        unit_flops(stem, active_in=-1)


def test_unit_flops_needs_an_output_size():
    conv = nn.Conv2d(3, 4, 3)
    unit = Unit("conv", conv, None, None, None, None, 3, 4, 1, None, [], False, "no BatchNorm2d", 0)
    with pytest.raises(UserInputError, match="find_units"):
        unit_flops(unit)


def test_flop_counting_leaves_model_unchanged():
    model = toy_models.resnet18_like()
    model.train()
    count_flops_reference(model)
    count_costs(model)
    assert all(module.training for module in model.modules())
    assert_no_hooks(model)
