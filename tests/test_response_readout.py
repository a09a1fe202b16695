"""where="response": one definition of a unit's response, sound for units with no activation of their own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import toy_models
import zoo
from filterscope.core.capture import capture
from filterscope.core.units import find_units


def _means(model, units, images, where):
    with torch.no_grad(), capture(model, units, ("mean",), where=where) as recorder:
        model(images)
    return recorder.arrays["mean"]


def test_response_is_the_relu_of_the_bn_output_where_a_residual_sum_follows():
    torch.manual_seed(0)
    model = toy_models.resnet18_like().eval()
    units = find_units(model)
    images = torch.randn(4, 3, 32, 32)
    block = model.layer1[0]
    seen = {}
    handle = block.bn2.register_forward_hook(lambda m, i, o: seen.__setitem__("bn2", o.detach().clone()))
    try:
        response = _means(model, units, images, "response")
        post = _means(model, units, images, "post")
    finally:
        handle.remove()
    expected = F.relu(seen["bn2"]).mean(dim=(2, 3)).numpy()
    assert torch.allclose(torch.from_numpy(response["layer1.0.conv2"]), torch.from_numpy(expected), atol=1e-6)
    assert (post["layer1.0.conv2"] < 0).any()  # "post" reads the signed BatchNorm output there
    assert (response["layer1.0.conv2"] >= 0).all()
    # where the unit has its own ReLU, "response" and "post" agree
    assert torch.equal(torch.from_numpy(response["layer1.0.conv1"]), torch.from_numpy(post["layer1.0.conv1"]))


def test_response_applies_a_functional_activation_that_post_cannot_hook():
    torch.manual_seed(0)
    model = zoo.FunctionalActivations().eval()
    units = find_units(model)
    images = torch.randn(3, 3, 32, 32)
    bn_out = _means(model, units, images, "bn")
    seen = {}
    handle = model.bns[1].register_forward_hook(lambda m, i, o: seen.__setitem__("bn", o.detach().clone()))
    try:
        response = _means(model, units, images, "response")
    finally:
        handle.remove()
    assert units[1].activation_name == "<functional silu>"
    expected = F.silu(seen["bn"]).mean(dim=(2, 3)).numpy()
    assert torch.allclose(torch.from_numpy(response[units[1].name]), torch.from_numpy(expected), atol=1e-6)
    assert not torch.allclose(torch.from_numpy(response[units[1].name]), torch.from_numpy(bn_out[units[1].name]))
