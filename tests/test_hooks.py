"""Hooks live only as long as they are needed: the Hooks helper, and every core function that hooks a model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from filterscope.core.capture import accumulate_by_class, capture, run_capture
from filterscope.core.errors import UserInputError
from filterscope.core.flops import count_costs, count_flops_reference
from filterscope.core.hooks import Hooks, hook_count
from filterscope.core.units import find_units


class Tripwire(nn.Module):
    """The identity until armed; armed, it raises in the middle of the forward pass."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("tripwire in the forward pass")
        return x


class TrippableNet(nn.Module):
    """Two conv-BN-ReLU units, a tripwire after them and a linear head (which count_costs hooks)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU()
        self.tripwire = Tripwire()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.tripwire(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(x.mean(dim=(2, 3)))


INPUT_SIZE = (3, 8, 8)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn((2, *INPUT_SIZE), generator=generator), torch.tensor([0, 2]))]


@pytest.fixture
def net():
    model = TrippableNet().eval()
    return model, find_units(model, INPUT_SIZE)


# ----------------------------------------------------------------------------- Hooks itself


def test_hooks_are_removed_when_the_block_ends():
    model = TrippableNet()
    calls = []
    with Hooks() as hooks:
        hooks.forward(model.conv1, lambda module, inputs, output: calls.append("forward"))
        hooks.forward_pre(model.fc, lambda module, inputs: calls.append("forward_pre"))
        assert len(hooks) == 2 and hook_count(model) == 2
        model(torch.zeros(1, *INPUT_SIZE))
    assert calls == ["forward", "forward_pre"]
    assert len(hooks) == 0 and hook_count(model) == 0
    model(torch.zeros(1, *INPUT_SIZE))
    assert calls == ["forward", "forward_pre"]


def test_hooks_are_removed_when_the_block_raises():
    model = TrippableNet()
    with pytest.raises(KeyError):
        with Hooks() as hooks:
            hooks.forward(model.conv1, lambda module, inputs, output: None)
            hooks.forward_pre(model, lambda module, inputs: None)
            raise KeyError("inside the block")
    assert hook_count(model) == 0


def test_remove_twice_is_safe_and_leaves_other_hooks_alone():
    model = TrippableNet()
    own = model.conv1.register_forward_hook(lambda module, inputs, output: None)
    hooks = Hooks()
    hooks.forward(model.conv1, lambda module, inputs, output: None)
    hooks.forward_pre(model.bn1, lambda module, inputs: None)
    assert hook_count(model) == 3
    hooks.remove()
    hooks.remove()
    assert hook_count(model) == 1  # the caller's own hook stays
    with hooks:  # an emptied Hooks can be used again
        hooks.forward(model.fc, lambda module, inputs, output: None)
        assert hook_count(model) == 2
    assert hook_count(model) == 1
    own.remove()
    assert hook_count(model) == 0


# ----------------------------------------------------------------------------- core functions that hook a model


def run_every_hooking_function(model: nn.Module, units: list) -> None:
    with torch.no_grad(), capture(model, units, ("mean", "max")) as recorder:
        model(batches()[0][0])
    assert recorder.num_seen == 2
    assert run_capture(model, units, batches(), progress=False).num_samples == 2
    assert accumulate_by_class(model, units, batches(), 3, progress=False)["__counts__"].tolist() == [1, 0, 1]
    for method in ("auto", "fx", "hooks"):
        assert len(find_units(model, INPUT_SIZE, method=method)) == 2
    assert count_costs(model, INPUT_SIZE).linear_flops == 2 * 6 * 3
    assert count_costs(model, INPUT_SIZE, units=units).total_flops == count_flops_reference(model, INPUT_SIZE)


def test_no_hook_is_left_after_success(net):
    model, units = net
    run_every_hooking_function(model, units)
    assert hook_count(model) == 0


def test_the_callers_own_hooks_are_kept(net):
    model, units = net
    own = model.relu2.register_forward_hook(lambda module, inputs, output: None)
    run_every_hooking_function(model, units)
    assert hook_count(model) == 1
    own.remove()


def test_no_hook_is_left_after_an_error_in_the_forward_pass(net):
    model, units = net
    model.tripwire.armed = True
    with pytest.raises(RuntimeError, match="tripwire"):
        with torch.no_grad(), capture(model, units, ("mean",)):
            model(batches()[0][0])
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="tripwire"):
        run_capture(model, units, batches(), progress=False)
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="tripwire"):
        accumulate_by_class(model, units, batches(), 3, progress=False)
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="tripwire"):
        count_costs(model, INPUT_SIZE, units=units)  # the linear layers' hooks are on during the run
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="tripwire"):
        count_flops_reference(model, INPUT_SIZE)
    assert hook_count(model) == 0


@pytest.mark.parametrize("method", ["auto", "fx", "hooks"])
def test_find_units_leaves_no_hook_when_the_model_raises(net, method):
    model, _ = net
    model.tripwire.armed = True
    with warnings.catch_warnings(), pytest.raises(UserInputError):
        warnings.simplefilter("ignore")
        find_units(model, INPUT_SIZE, method=method)
    assert hook_count(model) == 0
    assert not model.training  # the training flags are restored too (the model was in eval mode)
