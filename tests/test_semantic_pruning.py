"""Semantic pruning: accumulated responses, NWP/LWP selection, masked evaluation, DP/RP, export, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import CIFAR_ZIP, RESNET20, require_shared
from filterscope import find_units
from filterscope.methods.semantic_pruning.export import compare_costs, export_pruned
from filterscope.methods.semantic_pruning import (
    AccumulatedResponse,
    PruningMask,
    accumulate_responses,
    binary_auc,
    evaluate_masks,
    mask_hooks,
    overlap,
    overlap_matrices,
    parse_setting,
    response_pca,
    select_pruned,
)
from filterscope.cli import main
from filterscope.core.errors import UserInputError
from filterscope.models import create_model
from toy_models import TOY_MODELS


def _no_hooks(model: nn.Module) -> bool:
    return all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())


def _random_batches(num_batches=3, batch=12, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 32, 32, generator=generator), torch.randint(0, classes, (batch,), generator=generator))
            for _ in range(num_batches)]


def _eval_model(builder, num_classes=4, seed=0):
    torch.manual_seed(seed)
    model = builder(num_classes)
    # Non-trivial BatchNorm statistics, so masking is not hidden by a default identity BN.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


# ------------------------------------------------------------------ accumulated responses


@pytest.mark.parametrize("where", ["conv", "bn", "post"])
def test_accumulated_response_matches_a_plain_per_image_loop(where):
    model = _eval_model(TOY_MODELS["resnet18_like"])
    units = find_units(model, (3, 32, 32))
    batches = _random_batches()
    response = accumulate_responses(model, units, batches, 4, where=where, progress=False)

    # Reference: one image at a time, outputs read by plain hooks on the modules.
    module_of = {}
    for unit in units:
        if where == "conv":
            module_of[unit.name] = unit.conv
        elif where == "bn" or unit.activation is None:
            module_of[unit.name] = unit.bn
    expected = {unit.name: np.zeros((4, unit.out_channels)) for unit in units}
    for images, labels in batches:
        for image, label in zip(images, labels):
            outputs = {}
            handles = [module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.clone()))
                       for name, module in module_of.items()]
            try:
                with torch.no_grad():
                    model(image[None])
            finally:
                for handle in handles:
                    handle.remove()
            for unit in units:
                if unit.name in outputs:
                    value = outputs[unit.name]
                else:  # post-activation of a unit with an activation module: relu of its BN output
                    bn_output = {}
                    handle = unit.bn.register_forward_hook(lambda m, i, o: bn_output.__setitem__("x", o.clone()))
                    try:
                        with torch.no_grad():
                            model(image[None])
                    finally:
                        handle.remove()
                    value = torch.relu(bn_output["x"])
                expected[unit.name][int(label)] += value[0].sum(dim=(1, 2)).double().numpy()
    for unit in units:
        np.testing.assert_allclose(response.sums[unit.name], expected[unit.name], rtol=1e-5, atol=1e-3)
    labels = torch.cat([labels for _, labels in batches])
    np.testing.assert_array_equal(response.counts, np.bincount(labels.numpy(), minlength=4))
    if where == "post":
        # post-activation sums are never negative where the unit has its own activation
        assert all((response.sums[unit.name] >= 0).all() for unit in units if unit.activation is not None)
    assert _no_hooks(model)


def test_response_round_trips_through_npz(tmp_path):
    response = AccumulatedResponse({"a": np.arange(6.0).reshape(2, 3), "b": -np.ones((2, 2))}, np.array([3, 4]), "bn", ["x", "y"])
    loaded = AccumulatedResponse.load(response.save(tmp_path / "r.npz"))
    assert loaded.unit_names == ["a", "b"] and loaded.where == "bn" and loaded.classes == ["x", "y"]
    np.testing.assert_array_equal(loaded.matrix(), response.matrix())
    assert loaded.matrix().shape == (2, 5)


# ------------------------------------------------------------------ selection


def _hand_made_response() -> AccumulatedResponse:
    # class 0 responses: unit a = [5, 1, 3, 0], unit b = [2, -1, 4]; class 1 is the reverse order
    sums = {"a": np.array([[5.0, 1.0, 3.0, 0.0], [0.0, 3.0, 1.0, 5.0]]),
            "b": np.array([[2.0, -1.0, 4.0], [4.0, -1.0, 2.0]])}
    return AccumulatedResponse(sums, np.array([10, 10]), "bn", ["cat", "dog"])


def test_nwp_ranks_the_whole_network_and_lwp_each_layer():
    response = _hand_made_response()
    nwp = select_pruned(response, 0, 0.43, "nwp")  # floor(0.43 * 7) = 3 lowest of all: -1 (b1), 0 (a3), 1 (a1)
    np.testing.assert_array_equal(nwp.pruned["a"], [False, True, False, True])
    np.testing.assert_array_equal(nwp.pruned["b"], [False, True, False])
    assert nwp.num_pruned == 3 and nwp.fraction == pytest.approx(3 / 7)
    lwp = select_pruned(response, 0, 0.5, "lwp")  # floor(0.5*4)=2 of a: 0, 1; floor(0.5*3)=1 of b: -1
    np.testing.assert_array_equal(lwp.pruned["a"], [False, True, False, True])
    np.testing.assert_array_equal(lwp.pruned["b"], [False, True, False])
    lwp_dog = select_pruned(response, "dog", 0.5, "lwp")
    np.testing.assert_array_equal(lwp_dog.pruned["a"], [True, False, True, False])
    assert lwp_dog.per_unit_fraction == {"a": 0.5, "b": pytest.approx(1 / 3)}


def test_zero_score_median_ties_and_exclusion():
    response = _hand_made_response()
    zero = select_pruned(response, 0, "0-score", "nwp")
    np.testing.assert_array_equal(zero.vector(), [False, False, False, True, False, True, False])
    median = select_pruned(response, 0, "median", "nwp")  # median of all 7 is 2: strictly below it
    np.testing.assert_array_equal(median.vector(), [False, True, False, True, False, True, False])
    assert select_pruned(response, 0, 0.0, "nwp").num_pruned == 0
    # θ counts the included filters only: floor(0.5 * 4) = 2 lowest of a (0 and 1)
    excluded = select_pruned(response, 0, 0.5, "nwp", exclude=("b",))
    np.testing.assert_array_equal(excluded.pruned["a"], [False, True, False, True])
    assert not excluded.pruned["b"].any()
    tied = AccumulatedResponse({"a": np.zeros((1, 4))}, np.array([1]), "post")
    np.testing.assert_array_equal(select_pruned(tied, 0, 0.5, "lwp").pruned["a"], [True, True, False, False])


def test_bad_input_is_one_clear_error():
    response = _hand_made_response()
    with pytest.raises(UserInputError, match="unknown class 'bird'"):
        select_pruned(response, "bird", 0.1)
    with pytest.raises(UserInputError, match=r"outside \[0, 2\)"):
        select_pruned(response, 5, 0.1)
    for bad in (1.5, -0.1, "lots", float("nan")):
        with pytest.raises(UserInputError):
            parse_setting(bad)
    assert parse_setting("0.33") == pytest.approx(0.33) and parse_setting("0-score") == "0-score"
    with pytest.raises(UserInputError, match="unknown pruning mode"):
        select_pruned(response, 0, 0.1, "global")
    empty = AccumulatedResponse(response.sums, np.array([10, 0]), "bn", ["cat", "dog"])
    with pytest.raises(UserInputError, match="no images"):
        select_pruned(empty, "dog", 0.1)
    with pytest.raises(UserInputError, match="unknown units"):
        select_pruned(response, 0, 0.1, exclude=("c",))


def test_a_layer_pruned_entirely_is_reported_dead_and_still_evaluated():
    model = _eval_model(TOY_MODELS["vgg16_bn_like"])
    units = find_units(model, (3, 32, 32))
    response = accumulate_responses(model, units, _random_batches(), 4, progress=False)
    mask = select_pruned(response, 0, 1.0, "lwp")
    assert mask.dead and mask.emptied_units == [unit.name for unit in units]
    [evaluation] = evaluate_masks(model, units, _random_batches(seed=1), [mask], 4, progress=False)
    assert evaluation.dead and evaluation.fraction_direct == 1.0
    assert 0 <= evaluation.accuracy <= 1 and np.isfinite(evaluation.auc)


# ------------------------------------------------------------------ masked evaluation


def test_binary_auc_values():
    assert binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    assert binary_auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert np.isnan(binary_auc(np.array([1.0]), np.array([True])))


@pytest.mark.parametrize("name", ["resnet18_like", "inception_like"])
def test_batched_masks_equal_one_masked_model_at_a_time(name):
    model = _eval_model(TOY_MODELS[name])
    units = find_units(model, (3, 32, 32))
    train, test = _random_batches(seed=0), _random_batches(seed=1)
    response = accumulate_responses(model, units, train, 4, progress=False)
    masks = [select_pruned(response, c, theta, mode) for c in range(4) for mode in ("nwp", "lwp") for theta in (0.0, 0.3)]
    together = evaluate_masks(model, units, test, masks, 4, masks_per_pass=5, progress=False)
    assert _no_hooks(model)
    images = torch.cat([x for x, _ in test])
    labels = torch.cat([y for _, y in test]).numpy()
    for mask, evaluation in zip(masks, together):
        # Reference: zero the pruned channels of each unit's BN output, one mask, one plain pass.
        handles = []
        for unit in units:
            keep = torch.tensor(~mask.pruned[unit.name], dtype=torch.float32)
            handles.append(unit.bn.register_forward_hook(lambda m, i, o, keep=keep: o * keep[None, :, None, None]))
        try:
            with torch.no_grad():
                logits = model(images)
        finally:
            for handle in handles:
                handle.remove()
        predictions = logits.argmax(1).numpy()
        c = mask.class_index
        assert evaluation.accuracy == pytest.approx((predictions == labels).mean())
        true_c, predicted_c = labels == c, predictions == c
        assert evaluation.recall == pytest.approx((predicted_c & true_c).sum() / true_c.sum())
        if predicted_c.any():
            assert evaluation.precision == pytest.approx((predicted_c & true_c).sum() / predicted_c.sum())
        assert evaluation.auc == pytest.approx(binary_auc(logits[:, c].numpy(), true_c), abs=1e-6)
        assert evaluation.confusion.sum() == len(labels)
        assert evaluation.fraction_direct == pytest.approx(mask.fraction)
    assert _no_hooks(model)


def test_residual_pruning_counts_filters_whose_inputs_were_all_removed():
    # conv a (2 filters) -> relu -> conv b (2 filters, each reading one a filter) -> relu -> head
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 2, 3, padding=1, bias=False)
            self.a_bn = nn.BatchNorm2d(2)
            self.a_relu = nn.ReLU()
            self.b = nn.Conv2d(2, 2, 1, bias=False)
            self.b_bn = nn.BatchNorm2d(2)
            self.b_relu = nn.ReLU()
            self.fc = nn.Linear(2, 2)
            with torch.no_grad():
                self.b.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1))
                self.a_bn.bias.fill_(1.0)  # a's outputs are positive: alive
                self.b_bn.bias.fill_(0.0)
                self.b_bn.running_mean.fill_(0.0)

        def forward(self, x):
            x = self.a_relu(self.a_bn(self.a(x)))
            x = self.b_relu(self.b_bn(self.b(x)))
            return self.fc(x.mean(dim=(2, 3)))

    model = Chain().eval()
    units = find_units(model, (3, 32, 32))
    batches = [(torch.zeros(6, 3, 32, 32), torch.tensor([0, 0, 0, 1, 1, 1]))]
    full = PruningMask(0, 0.0, "lwp", {"a": np.array([False, False]), "b": np.array([False, False])})
    drop_a0 = PruningMask(0, 0.25, "lwp", {"a": np.array([True, False]), "b": np.array([False, False])})
    reference, pruned = evaluate_masks(model, units, batches, [full, drop_a0], 2, progress=False)
    assert reference.fraction_residual == 0.0
    # b0 reads only a0: its response is zero now (relu(bn(0)) with zero shift); b1 is not.
    assert pruned.fraction_direct == 0.25 and pruned.fraction_residual == 0.25
    assert pruned.residual_per_unit == {"a": 0.0, "b": 0.5}
    assert pruned.direct_per_unit == {"a": 0.5, "b": 0.0}
    # response under the mask relative to the full network: a0 pruned (0), a1 and b1 untouched (1), b0 lost (0)
    np.testing.assert_allclose(pruned.residual_ratio["a"], [0.0, 1.0])
    np.testing.assert_allclose(pruned.residual_ratio["b"], [0.0, 1.0])
    [tolerant] = evaluate_masks(model, units, batches, [drop_a0], 2, residual_tolerance=1.5, progress=False)
    assert tolerant.residual_per_unit == {"a": 0.5, "b": 1.0}  # every kept filter is within 150 % of its full response


def test_mask_hooks_zero_exactly_the_pruned_channels_of_each_group():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    [unit] = [u for u in find_units(model, (3, 8, 8)) if u.conv is conv]
    images = torch.randn(3, 3, 8, 8).repeat(2, 1, 1, 1)  # two groups of the same three images
    captured = []

    def run() -> torch.Tensor:
        # registered after the mask hook, so it sees the map the mask wrote into
        handle = model[1].register_forward_hook(lambda module, inputs, output: captured.append(output.clone()))
        try:
            with torch.no_grad():
                model(images)
        finally:
            handle.remove()
        return captured[-1]

    full = run()
    keep = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])  # group 0 drops channels 1 and 3, group 1 channel 3
    with mask_hooks([unit], {unit.name: keep}):
        masked = run()
    torch.testing.assert_close(masked, full * keep.repeat_interleave(3, dim=0)[:, :, None, None])
    assert (masked[:3, [1, 3]] == 0).all() and (masked[3:, 3] == 0).all() and (masked[3:, 1] == full[3:, 1]).all()
    assert _no_hooks(model)


def test_mask_hooks_are_removed_after_an_error():
    model = _eval_model(TOY_MODELS["resnet18_like"])
    units = find_units(model, (3, 32, 32))
    keep = {unit.name: torch.ones(unit.out_channels) for unit in units}
    with pytest.raises(RuntimeError):
        with mask_hooks(units, keep):
            assert not _no_hooks(model)
            raise RuntimeError("boom")
    assert _no_hooks(model)


# ------------------------------------------------------------------ interference


def test_overlap_and_pca():
    response = _hand_made_response()
    a, b = select_pruned(response, 0, 0.43, "nwp"), select_pruned(response, 1, 0.43, "nwp")
    # class 0 prunes {a1, a3, b1}; class 1 prunes {a0, a2, b1}
    values = overlap(a, b)
    assert values["pruned_intersection"] == 1 and values["pruned_jaccard"] == pytest.approx(1 / 5)
    assert values["kept_intersection"] == 2 and values["kept_jaccard"] == pytest.approx(2 / 6)
    matrices = overlap_matrices([a, b])
    np.testing.assert_allclose(np.diag(matrices["kept_jaccard"]), 1.0)
    assert matrices["pruned_intersection"][0, 1] == 1
    coordinates = response_pca(response, [a, b])
    assert coordinates.shape == (2, 2)
    assert np.allclose(coordinates[0], -coordinates[1])  # two centred points are symmetric


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("name", ["resnet20", "resnet18_like", "vgg16_bn_like", "inception_like", "mobilenet_like"])
def test_exported_network_gives_the_masked_networks_outputs(name):
    builder = (lambda classes: create_model("resnet20", classes)) if name == "resnet20" else TOY_MODELS[name]
    model = _eval_model(builder)
    units = find_units(model, (3, 32, 32))
    response = accumulate_responses(model, units, _random_batches(num_batches=1), 4, progress=False)
    excluded = tuple(unit.name for unit in units if unit.groups != 1)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for mode in ("nwp", "lwp"):
        mask = select_pruned(response, 1, 0.4, mode, exclude=excluded)
        exported = export_pruned(model, mask, check=False)
        images = torch.cat([x for x, _ in _random_batches(num_batches=1, seed=3)])
        keep = {unit.name: torch.tensor(~mask.pruned[unit.name], dtype=torch.float32) for unit in units}
        with torch.no_grad(), mask_hooks(units, keep):
            masked = model(images)
        with torch.no_grad():
            small = exported(images)
        torch.testing.assert_close(small, masked, rtol=1e-4, atol=1e-4)
        assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in model.parameters())
    assert _no_hooks(model)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_export_costs_shrink_with_pruning():
    model = _eval_model(lambda classes: create_model("resnet20", classes))
    units = find_units(model, (3, 32, 32))
    sums = {unit.name: np.random.default_rng(0).normal(size=(4, unit.out_channels)) for unit in units}
    mask = select_pruned(AccumulatedResponse(sums, np.ones(4), "post"), 0, 0.5, "lwp")
    costs = compare_costs(model, export_pruned(model, mask), mask, repeats=3)
    assert costs.flops_exported < 0.6 * costs.flops_full
    assert costs.params_exported < 0.6 * costs.params_full
    assert costs.max_output_difference < 1e-3
    all_pruned = select_pruned(AccumulatedResponse(sums, np.ones(4), "post"), 0, 1.0, "lwp", exclude=("conv1",))
    export_pruned(model, all_pruned)  # every block's convs replaced by zeros; still matches the masked net


# ------------------------------------------------------------------ CLI


def test_cli_semantic_prune_json_and_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["semantic-prune", "--model", "digits_cnn", "--data", "digits", "--classes", "3", "7",
                 "--mode", "nwp", "lwp", "--ratios", "0", "0.25", "0-score", "--threads", "1", "--json",
                 "--run-dir", str(run_dir)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    rows = summary["results"]
    assert len(rows) == 2 * 2 * 3
    assert {row["class"] for row in rows} == {"3", "7"} or {row["class_index"] for row in rows} == {3, 7}
    for row in rows:
        assert 0 <= row["recall"] <= 1 and 0 <= row["accuracy"] <= 1 and 0 <= row["auc"] <= 1
        assert 0 <= row["fraction_direct"] <= 1 and 0 <= row["fraction_residual"] <= 1
        if row["setting"] == 0:
            assert row["fraction_direct"] == 0 and row["fraction_residual"] == 0
        if row["setting"] == 0.25:
            assert row["fraction_direct"] == pytest.approx(0.25, abs=0.03)
    full = [row for row in rows if row["setting"] == 0]
    assert len({row["accuracy"] for row in full}) == 1  # the same full network for every class and mode
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "semantic_pruning" in metrics
    assert (run_dir / "arrays" / "semantic_response.npz").exists()
    assert (run_dir / "figures" / "semantic_curves.png").exists()


def test_default_read_out_is_response_and_post_still_works(capsys):
    """The ranking reads each unit's response by default (benchmarks/semantic_pruning/readout/); --where post
    keeps the read-out used before, and the summary names the read-out it used."""
    from filterscope.cli import build_parser
    from filterscope.methods.semantic_pruning import SemanticPruningConfig

    assert SemanticPruningConfig().where == "response"
    parser = build_parser()
    base = ["semantic-prune", "--model", "digits_cnn", "--data", "digits"]
    assert parser.parse_args(base).where == "response"
    assert parser.parse_args([*base, "--where", "post"]).where == "post"
    for where in ("response", "post"):
        flags = [] if where == "response" else ["--where", "post"]
        code = main([*base, "--classes", "3", "--mode", "nwp", "--ratios", "0.25", "--threads", "1", "--json", *flags])
        assert code == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["where"] == where and len(summary["results"]) == 1


@pytest.mark.parametrize("flags, message", [
    (["--classes", "zebra"], "unknown class"),
    (["--ratios", "1.5"], "[0, 1]"),
])
def test_cli_bad_input_exits_2_with_one_sentence(flags, message, capsys):
    code = main(["semantic-prune", "--model", "digits_cnn", "--data", "digits", "--json", *flags])
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.slow
def test_resnet20_full_network_reproduces_the_jpeg_accuracy(capsys):
    require_shared(CIFAR_ZIP, RESNET20)
    code = main(["semantic-prune", "--model", "resnet20", "--weights", str(RESNET20), "--data", str(CIFAR_ZIP),
                 "--classes", "cat", "--mode", "lwp", "--ratios", "0", "--json", "--threads", "1"])
    assert code == 0
    [row] = json.loads(capsys.readouterr().out)["results"]
    assert row["accuracy"] == pytest.approx(0.8103, abs=0.001)


def test_sweep_reads_theta_zero_from_one_full_network_pass():
    from filterscope.methods.semantic_pruning import SemanticPruningConfig, sweep

    model = _eval_model(TOY_MODELS["resnet18_like"])
    units = find_units(model, (3, 32, 32))
    response = accumulate_responses(model, units, _random_batches(), 4, progress=False)
    test = _random_batches(seed=2)
    rows = sweep(model, units, response, test, SemanticPruningConfig(settings=(0, 0.2), classes=(1, 2)), progress=False)
    assert [(row.class_index, row.mode, row.setting) for row in rows] == [
        (c, mode, s) for c in (1, 2) for mode in ("nwp", "lwp") for s in (0.0, 0.2)]
    keep_all = [select_pruned(response, c, 0.0, "nwp") for c in (1, 2)]
    direct = evaluate_masks(model, units, test, keep_all, 4, progress=False)
    for evaluation, row in zip(direct, [rows[0], rows[4]]):
        np.testing.assert_equal((evaluation.recall, evaluation.precision, evaluation.accuracy), (row.recall, row.precision, row.accuracy))
        assert evaluation.auc == pytest.approx(row.auc)
        assert row.fraction_residual == 0.0
    pruned = [row for row in rows if row.setting == 0.2]
    assert all(row.fraction_direct > 0.15 and row.fraction_residual >= 0 for row in pruned)
