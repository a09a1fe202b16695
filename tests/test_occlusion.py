"""Occlusion concept analysis and receptive fields: a hand-built gate that reads one region, the streaming
quantile against numpy, the region checks, and ``filterscope occlude`` end to end on the digits demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from filterscope.analyses.occlusion import box_region, check_region, fill_values, occlude, occlusion_analysis
from filterscope.analyses.receptive_fields import TopQuantile, field_thresholds, read_units, receptive_fields, activation_maps
from filterscope.core.errors import UserInputError
from filterscope.core.hooks import hook_count
from filterscope.methods.decoupling import DecoupleConfig, decouple, load_decoupled
from filterscope.methods.decoupling.unwrap import base_network

from test_cli import assert_one_clear_error, run_cli

torch.set_num_threads(1)
FIXTURE = Path(__file__).parent / "fixtures" / "decoupled_digits_demo.pt"
REGION = (2, 2, 6, 6)  # x0, y0, x1, y1: the bright square the hand-built gate reads


class ThreeUnits(nn.Module):
    """Three 1×1 conv-BN-ReLU units on 8×8 one-channel images, GAP and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv0, self.bn0, self.relu0 = nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU()
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        x = self.relu0(self.bn0(self.conv0(x)))
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def region_gated_model():
    """A decoupled model whose only gated unit (conv1) keeps filter 1 on exactly when the mean brightness of
    its input is above 1/16, i.e. when the 4×4 square REGION (a quarter of the image) is lit; filter 1 copies
    the image, filters 0 and 2 are always on and read nothing."""
    decoupled = decouple(ThreeUnits().eval(), DecoupleConfig(standardize_gate_input=False), num_classes=2,
                         input_shape=(1, 8, 8), input_mean=(0.0,), input_std=(1.0,))
    network = decoupled.network
    with torch.no_grad():
        network.conv0.weight.zero_()
        network.conv0.weight[0, 0] = 1.0  # channel 0 = the image
        gated = network.conv1
        gated.conv.weight.zero_()
        gated.conv.weight[1, 0] = 1.0  # filter 1 = the image
        controller = gated.controller
        controller.squeeze.weight.copy_(torch.tensor([[1.0, 0.0]]))
        controller.squeeze.bias.zero_()
        controller.expand.weight.copy_(torch.tensor([[0.0], [16.0], [0.0]]))
        controller.expand.bias.copy_(torch.tensor([2.0, -1.0, 2.0]))
    assert decoupled.gated_units == ["conv1"]
    return decoupled.eval()


def lit_images(count: int, box=REGION) -> torch.Tensor:
    images = torch.zeros(count, 1, 8, 8)
    x0, y0, x1, y1 = box
    images[:, :, y0:y1, x0:x1] = torch.linspace(0.5, 1.0, count)[:, None, None, None]
    return images


def test_occluding_the_region_a_gate_reads_switches_exactly_that_filter_off():
    model = region_gated_model()
    images = lit_images(6)
    units = read_units(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    thresholds = field_thresholds(model, units, [images], 6, quantile=0.5)  # T = 0: the field is where the map is > 0
    region = box_region(REGION, (8, 8))
    result = occlusion_analysis(model, images, region, thresholds, fill=fill_values("black", (0.0,), (1.0,)))
    off = result.switched_off["conv1"]
    assert off.tolist() == [[False, True, False]] * 6
    assert not result.switched_on["conv1"].any()
    assert result.on_before["conv1"].all()
    np.testing.assert_allclose(result.single_iou["conv1"][:, 1], 1.0)  # filter 1's field is the region itself
    np.testing.assert_allclose(result.union_iou[:, 0], 1.0)
    summary = result.summary()["per_layer"]["conv1"]
    assert summary["images_with_switched_off"] == 6 and summary["mean_switched_off"] == 1.0
    assert summary["single_iou"] == pytest.approx(1.0) and summary["union_over_single"] == pytest.approx(1.0)
    assert result.top_filters[0][0][:2] == ("conv1", 1)
    # elsewhere in the image nothing is lit, so occluding there changes no gate
    elsewhere = occlusion_analysis(model, images, box_region((0, 6, 8, 8), (8, 8)), thresholds,
                                   fill=fill_values("black", (0.0,), (1.0,)))
    assert not elsewhere.switched_off["conv1"].any() and np.isnan(elsewhere.union_iou).all()
    assert hook_count(model) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # the model is not changed


def test_hooks_are_removed_after_an_error():
    model = region_gated_model()
    units = read_units(model)
    with pytest.raises(RuntimeError):
        activation_maps(model, units, torch.zeros(2, 3, 8, 8))  # wrong channel count: the conv raises
    assert hook_count(model) == 0


def test_fields_are_the_upsampled_maps_above_each_filters_quantile():
    model = region_gated_model()
    units = read_units(model)
    images = lit_images(4)
    thresholds = field_thresholds(model, units, [images[:2], images[2:]], 4, quantile=0.9)
    maps, _ = activation_maps(model, units, images)
    values = maps["conv1"].transpose(0, 1).reshape(3, -1).numpy()
    np.testing.assert_allclose(thresholds.thresholds["conv1"], np.quantile(values, 0.9, axis=1), rtol=1e-6)
    fields = receptive_fields(maps, thresholds, (16, 16))["conv1"]
    assert fields.shape == (4, 3, 16, 16) and fields.dtype == torch.bool
    assert not fields[:, [0, 2]].any()  # filters that read nothing have no field


@pytest.mark.parametrize("total,quantile", [(1000, 0.995), (7, 0.5), (64, 0.9), (1, 0.3)])
def test_streaming_quantile_equals_numpy(total, quantile):
    values = torch.randn(3, total)
    tracker = TopQuantile(3, total, quantile)
    for chunk in values.split(5, dim=1):
        tracker.update(chunk)
    np.testing.assert_allclose(tracker.value(), np.quantile(values.numpy(), quantile, axis=1), rtol=1e-6)


def test_fill_values_and_occlude():
    black = fill_values("black", (0.5, 0.25), (0.5, 0.25))
    assert black.tolist() == [-1.0, -1.0]
    images = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    assert torch.allclose(fill_values("mean", (0, 0), (1, 1), images), images.mean(dim=(0, 2, 3)))
    occluded = occlude(images, torch.from_numpy(box_region((1, 0, 3, 2), (4, 4))), black)
    assert (occluded[:, :, 0:2, 1:3] == -1).all() and torch.equal(occluded[:, :, 2:], images[:, :, 2:])
    assert images[0, 0, 0, 1] == 1  # the input is not changed


@pytest.mark.parametrize("box", [(0, 0, 9, 4), (-1, 0, 3, 3), (3, 3, 3, 5), (0, 5, 4, 2)])
def test_a_box_outside_the_image_or_empty_is_refused(box):
    with pytest.raises(UserInputError, match="not inside the 8×8 image"):
        box_region(box, (8, 8))


def test_bad_masks_and_models_are_refused():
    with pytest.raises(UserInputError, match="empty"):
        check_region(np.zeros((8, 8)), (8, 8))
    with pytest.raises(UserInputError, match="image size"):
        check_region(np.ones((4, 4)), (8, 8))
    model = region_gated_model()
    thresholds = field_thresholds(model, read_units(model), [lit_images(2)], 2)
    with pytest.raises(UserInputError, match="decouple it first"):
        occlusion_analysis(base_network(model), lit_images(2), box_region(REGION, (8, 8)), thresholds, fill=torch.zeros(1))
    with pytest.raises(UserInputError, match="has 2"):
        field_thresholds(model, read_units(model), [lit_images(2)], 3)


# --------------------------------------------------------------------------------------------------
# filterscope occlude, on the digits demo
# --------------------------------------------------------------------------------------------------


def test_occlude_cli_on_digits(tmp_path, capsys):
    run = tmp_path / "run"
    started = time.process_time()
    code, out, err = run_cli("occlude", "--weights", FIXTURE, "--data", "digits", "--box", 2, 2, 6, 6, "--images", 40,
                             "--threads", 1, "--run-dir", run, "--json", "--quiet", capsys=capsys)
    assert code == 0, err
    assert time.process_time() - started < 20
    summary = json.loads(out)
    assert summary["num_images"] == 40 and summary["region_fraction"] == pytest.approx(16 / 64)
    assert set(summary["per_layer"]) == {"features.3", "features.7"}
    assert summary["thresholds"]["num_images"] == 359  # the whole digits test split (fewer than 1000)
    metrics = json.loads((run / "metrics.json").read_text())["occlusion"]
    assert metrics["per_layer"] == summary["per_layer"]
    with np.load(run / "arrays" / "occlusion.npz") as arrays:
        off = arrays["features.3/switched_off"]
        assert off.shape == (40, 32) and arrays["pixels"].shape == (40, 8, 8, 1)
        assert metrics["per_layer"]["features.3"]["mean_switched_off"] == pytest.approx(off.sum(1).mean())
    assert {p.name for p in (run / "figures").iterdir()} == {"occlusion_examples.png", "occlusion_iou_per_layer.png"}
    assert (run / "report.html").is_file() and (run / "occlude.yaml").is_file()


def test_occlude_batch_mode_takes_one_region_per_image(tmp_path, capsys):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[4:8, 0:4] = 255
    Image.fromarray(mask).save(tmp_path / "corner.png")
    (tmp_path / "regions.csv").write_text("index,x0,y0,x1,y1,mask\n5,0,0,4,4,\n9,,,,,corner.png\n0,4,4,8,8,\n")
    code, out, err = run_cli("occlude", "--weights", FIXTURE, "--data", "digits", "--regions", tmp_path / "regions.csv",
                             "--threads", 1, "--json", "--quiet", "--run-dir", tmp_path / "run", capsys=capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["num_images"] == 3 and summary["image_indices"] == [5, 9, 0]
    with np.load(tmp_path / "run" / "arrays" / "occlusion.npz") as arrays:
        regions = arrays["regions"]
    assert regions[0, :4, :4].all() and regions[0].sum() == 16
    assert regions[1, 4:, :4].all() and regions[1].sum() == 16
    assert regions[2, 4:, 4:].all() and regions[2].sum() == 16


def test_occlude_cli_bad_input(tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    torch.save(base_network(load_decoupled(FIXTURE)).state_dict(), plain)
    np.save(tmp_path / "x.npy", np.zeros(1))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((4, 4), 255, dtype=np.uint8)).save(tmp_path / "small.png")
    common = ("--data", "digits", "--threads", 1, "--quiet")
    cases = [
        (("--weights", plain, "--box", 0, 0, 4, 4), "decouple it first"),
        (("--weights", FIXTURE, "--box", 0, 0, 9, 4), "not inside the 8×8 image"),
        (("--weights", FIXTURE, "--mask", tmp_path / "empty.png"), "is empty"),
        (("--weights", FIXTURE, "--mask", tmp_path / "small.png"), "image size"),
        (("--weights", FIXTURE, "--box", 0, 0, 4, 4, "--images", 400), "pass --images 359 or fewer"),
        (("--weights", FIXTURE, "--box", 0, 0, 4, 4, "--quantile-images", 360), "pass --quantile-images 359 or fewer"),
        (("--weights", FIXTURE, "--box", 0, 0, 4, 4, "--quantile", 1.5), "quantile must lie in (0, 1)"),
    ]
    for arguments, fragment in cases:
        code, _, err = run_cli("occlude", *arguments, *common, capsys=capsys)
        assert_one_clear_error(code, err, fragment)
