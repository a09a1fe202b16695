"""capture, run_capture and accumulate_by_class against plain computations on the module outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import toy_models
from filterscope.core.capture import STATISTICS, CaptureResult, accumulate_by_class, capture, channel_statistics, run_capture
from filterscope.core.errors import UserInputError
from filterscope.core.units import Unit, find_units
from test_units import assert_no_hooks


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so 'bn' differs from 'conv'."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(channels, generator=generator) * 0.3)
    return model.eval()


def images(count: int, size=(3, 32, 32), seed: int = 1) -> torch.Tensor:
    return torch.randn((count, *size), generator=torch.Generator().manual_seed(seed))


def plain_statistic(activation: torch.Tensor, stat: str) -> np.ndarray:
    """The statistic written out in float64 numpy, independently of filterscope's torch code."""
    values = activation.detach().double().numpy().reshape(activation.shape[0], activation.shape[1], -1)
    positions = values.shape[2]
    if stat == "mean":
        return values.sum(axis=2) / positions
    if stat == "sum":
        return values.sum(axis=2)
    if stat == "max":
        return values.max(axis=2)
    return (values > 0).sum(axis=2) / positions


def vgg_outputs_by_hand(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Run VGG's features one layer at a time; keep each conv's raw, BatchNorm and ReLU outputs."""
    outputs: dict[str, dict[str, torch.Tensor]] = {}
    conv_name = None
    with torch.no_grad():
        for index, layer in enumerate(model.features):
            if isinstance(layer, nn.Conv2d):
                conv_name = f"features.{index}"
                x = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
                outputs[conv_name] = {"conv": x}
            elif isinstance(layer, nn.BatchNorm2d):
                x = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps)
                outputs[conv_name]["bn"] = x
            elif isinstance(layer, nn.ReLU):
                x = torch.relu(x)  # not in place: the BatchNorm output above must survive
                outputs[conv_name]["post"] = x
            else:
                x = F.max_pool2d(x, 2, 2)
    return outputs


@pytest.fixture(scope="module")
def vgg():
    model = randomize_batchnorm(toy_models.vgg16_bn_like())
    return model, find_units(model)


@pytest.mark.parametrize("where", ["conv", "bn", "post"])
def test_statistics_match_a_plain_computation(vgg, where):
    model, units = vgg
    x = images(5)
    by_hand = vgg_outputs_by_hand(model, x)
    with torch.no_grad(), capture(model, units, STATISTICS, where=where, num_samples=5) as rec:
        model(x[:2])
        model(x[2:])
    assert rec.num_seen == 5
    for unit in units:
        for stat in STATISTICS:
            array = rec.arrays[stat][unit.name]
            assert array.dtype == np.float32 and array.shape == (5, unit.out_channels)
            expected = plain_statistic(by_hand[unit.name][where], stat)
            np.testing.assert_allclose(array, expected, rtol=1e-4, atol=1e-4, err_msg=f"{unit.name} {stat}")
    # After the ReLU nothing is negative; before it, some values are.
    if where == "post":
        assert all(rec.arrays["max"][unit.name].min() >= 0 for unit in units)
    else:
        assert rec.arrays["frac_positive"]["features.0"].min() < 1


def test_reused_relu_post_output_is_the_one_after_batchnorm():
    model = randomize_batchnorm(toy_models.resnet18_like())
    units = find_units(model)
    x = images(3)
    with torch.no_grad():
        stem_post = model.maxpool(torch.relu(model.bn1(model.conv1(x))))
        block = model.layer1[0]
        conv1_post = torch.relu(block.bn1(block.conv1(stem_post)))
        conv2_bn = block.bn2(block.conv2(conv1_post))
        block_output = torch.relu(conv2_bn + stem_post)
        with capture(model, units, ("sum", "max"), where="post") as rec:
            model(x)
    np.testing.assert_allclose(rec.arrays["sum"]["layer1.0.conv1"], plain_statistic(conv1_post, "sum"), rtol=1e-4, atol=1e-4)
    # conv2 has no activation of its own (the ReLU comes after the residual sum): "post" is bn2's output.
    np.testing.assert_allclose(rec.arrays["sum"]["layer1.0.conv2"], plain_statistic(conv2_bn, "sum"), rtol=1e-4, atol=1e-4)
    assert not np.allclose(rec.arrays["sum"]["layer1.0.conv2"], plain_statistic(block_output, "sum"), atol=1e-3)
    assert rec.arrays["max"]["layer1.0.conv1"].min() >= 0  # after the ReLU
    assert rec.arrays["max"]["layer1.0.conv2"].min() < 0 or rec.arrays["sum"]["layer1.0.conv2"].min() < 0
    assert all(not np.isnan(array).any() for array in rec.arrays["sum"].values())


def test_functional_activation_post_is_batchnorm_output():
    model = randomize_batchnorm(toy_models.inception_like())
    units = [unit for unit in find_units(model) if unit.name == "conv1.conv"]
    x = images(2)
    with torch.no_grad():
        bn_output = model.conv1.bn(model.conv1.conv(x))
        with capture(model, units, ("mean",), where="post") as post, capture(model, units, ("mean",), where="bn") as bn:
            model(x)
    np.testing.assert_allclose(post.arrays["mean"]["conv1.conv"], plain_statistic(bn_output, "mean"), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(post.arrays["mean"]["conv1.conv"], bn.arrays["mean"]["conv1.conv"])


def test_unit_without_batchnorm_reads_conv_and_activation():
    model = randomize_batchnorm(toy_models.grouped_conv_model())
    units = find_units(model)
    x = images(2)
    with torch.no_grad():
        plain_input = model.grouped_relu(model.grouped_bn(model.grouped(model.stem_relu(model.stem_bn(model.stem(x))))))
        plain_conv = model.plain(plain_input)
        results = {}
        for where in ("conv", "bn", "post"):
            with capture(model, units[2:], ("mean",), where=where) as rec:
                model(x)
            results[where] = rec.arrays["mean"]["plain"]
    np.testing.assert_allclose(results["conv"], plain_statistic(plain_conv, "mean"), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(results["bn"], results["conv"])  # no BatchNorm: the conv output
    np.testing.assert_allclose(results["post"], plain_statistic(F.leaky_relu(plain_conv, 0.1), "mean"), rtol=1e-4, atol=1e-5)


def test_arrays_grow_keep_order_and_reset(vgg):
    model, units = vgg
    x = images(7)
    with torch.no_grad(), capture(model, units[:2], ("mean",)) as rec:
        for start, stop in [(0, 3), (3, 4), (4, 7)]:
            model(x[start:stop])
        grown = rec.arrays["mean"]["features.0"].copy()
        rec.reset()
        assert rec.num_seen == 0 and rec.arrays["mean"]["features.0"].shape == (0, 8)
        model(x[5:])
    assert grown.shape == (7, 8)
    with torch.no_grad(), capture(model, units[:1], ("mean",), num_samples=7) as whole:
        model(x)
    np.testing.assert_allclose(grown, whole.arrays["mean"]["features.0"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.arrays["mean"]["features.0"], grown[5:], rtol=1e-5, atol=1e-6)


def test_more_samples_than_num_samples_is_an_error(vgg):
    model, units = vgg
    with pytest.raises(UserInputError, match="num_samples=3"):
        with torch.no_grad(), capture(model, units[:1], num_samples=3):
            model(images(2))
            model(images(2))
    assert_no_hooks(model)


def test_recorder_keeps_only_the_arrays(vgg):
    model, units = vgg
    with torch.no_grad(), capture(model, units, ("mean", "max"), where="post", num_samples=4) as rec:
        model(images(4))

    def tensors_in(item, depth=0):
        if isinstance(item, torch.Tensor):
            return 1
        if depth > 4:
            return 0
        if isinstance(item, dict):
            return sum(tensors_in(value, depth + 1) for value in item.values())
        if isinstance(item, (list, tuple, set)):
            return sum(tensors_in(value, depth + 1) for value in item)
        return 0

    assert tensors_in(vars(rec)) == 0
    arrays = [array for by_unit in rec.arrays.values() for array in by_unit.values()]
    assert len(arrays) == 2 * len(units)
    assert rec.nbytes == sum(4 * 4 * unit.out_channels for unit in units) * 2 == sum(array.nbytes for array in arrays)


# ----------------------------------------------------------------------------- hooks and side effects


def test_hooks_removed_after_an_error_in_the_block(vgg):
    model, units = vgg
    with pytest.raises(KeyError):
        with torch.no_grad(), capture(model, units, STATISTICS, where="post"):
            model(images(1))
            raise KeyError("inside the block")
    assert_no_hooks(model)


def test_hooks_removed_after_the_model_raises():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()

        def forward(self, x):
            self.relu(self.bn(self.conv(x)))
            raise RuntimeError("forward failed after the unit ran")

    model = Failing().eval()
    # find_units cannot run this model, so the unit is built by hand.
    units = [Unit("conv", model.conv, model.bn, model.relu, "bn", "relu", 3, 4, 1, (30, 30), [], True, None, 0)]
    with pytest.raises(RuntimeError, match="forward failed"):
        with torch.no_grad(), capture(model, units, ("mean",)) as rec:
            model(images(2))
    assert rec.num_seen == 0  # the failed batch is not counted
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="forward failed"):
        run_capture(model, units, [(images(2), torch.tensor([0, 1]))], progress=False)
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="forward failed"):
        accumulate_by_class(model, units, [(images(2), torch.tensor([0, 1]))], 2, progress=False)
    assert_no_hooks(model)


def test_model_parameters_and_mode_unchanged(vgg):
    model, units = vgg
    state_before = {key: value.clone() for key, value in model.state_dict().items()}
    loader = [(images(3, seed=seed), torch.tensor([0, 1, 2])) for seed in range(2)]
    run_capture(model, units, loader, STATISTICS, progress=False)
    accumulate_by_class(model, units, loader, 3, progress=False)
    assert all(torch.equal(state_before[key], value) for key, value in model.state_dict().items())
    assert not any(module.training for module in model.modules())

    trained = toy_models.grouped_conv_model().train()  # capture does not switch modes
    with torch.no_grad(), capture(trained, find_units(trained)):
        trained(images(2))
    assert all(module.training for module in trained.modules())
    assert_no_hooks(trained)


def test_bad_arguments(vgg):
    model, units = vgg
    with pytest.raises(UserInputError, match="unknown statistics"):
        with capture(model, units, ("median",)):
            pass
    with pytest.raises(UserInputError, match="where must be one of"):
        with capture(model, units, where="relu"):
            pass
    other = toy_models.vgg16_bn_like()
    with pytest.raises(UserInputError, match="does not belong to this model"):
        with capture(other, units):
            pass
    with pytest.raises(UserInputError, match=r"model.to\('cuda'\)"):
        run_capture(model, units, [], device="cuda", progress=False)
    with pytest.raises(UserInputError, match="label 5 is outside"):
        accumulate_by_class(model, units, [(images(2), torch.tensor([0, 5]))], 3, progress=False)
    assert_no_hooks(model)


def test_channel_statistics_values():
    activation = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[-1.0, -1.0], [-1.0, 5.0]]]])  # (1, 2, 2, 2)
    assert channel_statistics(activation, "mean").tolist() == [[0.5, 0.5]]
    assert channel_statistics(activation, "sum").tolist() == [[2.0, 2.0]]
    assert channel_statistics(activation, "max").tolist() == [[3.0, 5.0]]
    assert channel_statistics(activation, "frac_positive").tolist() == [[0.5, 0.25]]


# ----------------------------------------------------------------------------- run_capture / accumulate_by_class


def labelled_batches(count: int, batch: int, num_classes: int, seed: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, 3, 32, 32), generator=generator)
    y = torch.randint(0, num_classes, (count,), generator=generator)
    return [(x[start : start + batch], y[start : start + batch]) for start in range(0, count, batch)]


def test_run_capture_returns_arrays_labels_and_predictions(vgg):
    model, units = vgg
    batches = labelled_batches(10, 4, 3)
    result = run_capture(model, units, batches, ("mean", "frac_positive"), where="bn", progress=False)
    assert isinstance(result, CaptureResult) and result.num_samples == 10
    x = torch.cat([images for images, _ in batches])
    np.testing.assert_array_equal(result.labels, torch.cat([labels for _, labels in batches]).numpy())
    with torch.no_grad():
        np.testing.assert_array_equal(result.predictions, model(x).argmax(1).numpy())
    by_hand = vgg_outputs_by_hand(model, x)
    for unit in units:
        np.testing.assert_allclose(
            result.arrays["mean"][unit.name], plain_statistic(by_hand[unit.name]["bn"], "mean"), rtol=1e-4, atol=1e-4
        )
        assert result.arrays["frac_positive"][unit.name].shape == (10, unit.out_channels)
    assert result.labels.dtype == result.predictions.dtype == np.int64


def test_run_capture_with_a_dataloader(vgg):
    model, units = vgg
    batches = labelled_batches(6, 6, 2)
    dataset = torch.utils.data.TensorDataset(*batches[0])
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    result = run_capture(model, units[:3], loader, progress=False)
    direct = run_capture(model, units[:3], batches, progress=False)
    assert result.num_samples == 6
    for name in direct.arrays["mean"]:
        np.testing.assert_allclose(result.arrays["mean"][name], direct.arrays["mean"][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stat", ["sum", "frac_positive"])
def test_accumulate_by_class_matches_a_per_sample_loop(vgg, stat):
    model, units = vgg
    num_classes = 4
    batches = labelled_batches(9, 4, num_classes)
    sums = accumulate_by_class(model, units, batches, num_classes, stat, where="post", progress=False)

    expected = {unit.name: np.zeros((num_classes, unit.out_channels)) for unit in units}
    counts = np.zeros(num_classes, dtype=np.int64)
    for batch_images, batch_labels in batches:
        for sample, label in zip(batch_images, batch_labels.tolist()):
            by_hand = vgg_outputs_by_hand(model, sample[None])
            for unit in units:
                expected[unit.name][label] += plain_statistic(by_hand[unit.name]["post"], stat)[0]
            counts[label] += 1

    assert set(sums) == {unit.name for unit in units} | {"__counts__"}
    np.testing.assert_array_equal(sums["__counts__"], counts)
    assert sums["__counts__"].sum() == 9
    for unit in units:
        assert sums[unit.name].dtype == np.float64 and sums[unit.name].shape == (num_classes, unit.out_channels)
        np.testing.assert_allclose(sums[unit.name], expected[unit.name], rtol=1e-5, atol=1e-4)


def test_accumulate_by_class_all_reduces_under_torch_distributed(vgg, tmp_path):
    import torch.distributed as dist

    model, units = vgg
    batches = labelled_batches(4, 2, 2)
    alone = accumulate_by_class(model, units[:2], batches, 2, progress=False)
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    except Exception as error:  # noqa: BLE001 - no usable network interface for gloo here
        pytest.skip(f"cannot start a gloo process group: {error}")
    try:
        together = accumulate_by_class(model, units[:2], batches, 2, progress=False)
    finally:
        dist.destroy_process_group()
    for key in alone:
        np.testing.assert_array_equal(together[key], alone[key])  # world size 1: the all-reduce is the identity
