"""Influential features (Algorithm 1), the decomposed final layer, the noise ablation, CSG and the views."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from filterscope.methods.influence.csg import CSGConfig, csg_index_sets, csg_sets_above, train_csg
from filterscope.methods.influence.decomposed import (
    DecomposedLinear,
    accuracy_of_head,
    decompose,
    evaluate_decomposition,
    retrain_head,
)
from filterscope.methods.influence import (
    CRITERIA,
    InfluenceAccumulator,
    InfluenceConfig,
    accumulate_influence,
    evaluate_with_noise,
    feature_maps,
    find_final_linear,
    find_influential_features,
    jaccard_overlap,
    mutual_information,
    noise_ablation,
    replace_with_noise,
    select_top,
)
from filterscope.cli import main
from filterscope.core.errors import UserInputError

from conftest import CIFAR_ZIP, RESNET20, require_shared


# ----------------------------------------------------------------------------- references


def plain_loop_algorithm(features: np.ndarray, labels: np.ndarray, num_classes: int, k1: int, k2: int):
    """Algorithm 1 written the slow, obvious way: one instance at a time, Python sorting."""
    num_features = features.shape[1]
    counts = np.zeros((num_classes, num_features), dtype=np.int64)
    for row, label in zip(features, labels):
        magnitude = np.abs(row).reshape(num_features, -1).sum(1)  # value, or spatial l1 of a map
        top = sorted(range(num_features), key=lambda j: (-magnitude[j], j))[:k1]
        for j in top:
            counts[label, j] += 1
    indices = [sorted(range(num_features), key=lambda j: (-counts[c, j], j))[:k2] for c in range(num_classes)]
    return counts, np.array(indices)


class TinyCNN(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, global average pooling, linear."""

    def __init__(self, width: int = 12, num_classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.body(x)), 1))

    def penultimate(self, x):
        return torch.flatten(self.pool(self.body(x)), 1)


class ConvClassifier(nn.Module):
    """Ends in a 1x1 conv and pooling: no final linear layer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 6, 3, padding=1)
        self.classifier = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.classifier(torch.relu(self.body(x))).mean((2, 3))


def tiny_setup(num_samples: int = 96, num_classes: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyCNN(num_classes=num_classes).eval()
    images = torch.randn(num_samples, 3, 8, 8)
    labels = torch.arange(num_samples) % num_classes
    loader = DataLoader(TensorDataset(images, labels), batch_size=25)
    return model, images, labels, loader


def hooks_on(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ----------------------------------------------------------------------------- Algorithm 1


@pytest.mark.parametrize("shape", [(157, 11), (83, 9, 3, 2)])
def test_vectorised_algorithm_matches_the_plain_loop(shape):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(*shape, generator=generator)
    labels = torch.randint(0, 3, (shape[0],), generator=generator)
    accumulator = InfluenceAccumulator(3, shape[1], k1=4)
    for start in range(0, shape[0], 37):  # uneven batches
        accumulator.add(features[start : start + 37], labels[start : start + 37])
    statistics = accumulator.statistics()
    counts, indices = plain_loop_algorithm(features.numpy(), labels.numpy(), 3, k1=4, k2=5)
    np.testing.assert_array_equal(statistics.counts, counts)
    np.testing.assert_array_equal(select_top(statistics.counts, 5), indices)
    assert statistics.counts.sum() == shape[0] * 4
    np.testing.assert_array_equal(statistics.class_counts, np.bincount(labels.numpy(), minlength=3))
    pooled = features.double().reshape(shape[0], shape[1], -1).mean(2).numpy()
    np.testing.assert_allclose(statistics.feature_mean, pooled.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(statistics.feature_std, pooled.std(0), rtol=1e-8, atol=1e-10)


def test_ties_go_to_the_lower_index():
    features = torch.tensor([[0.0, 2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    accumulator = InfluenceAccumulator(1, 5, k1=3)
    accumulator.add(features, torch.zeros(2, dtype=torch.int64))
    # row 1: 1 and 4 (equal), then 0 (first of the zeros); row 2: 0, 1, 2
    np.testing.assert_array_equal(accumulator.statistics().counts, [[2, 2, 1, 0, 1]])
    np.testing.assert_array_equal(select_top(np.array([[1.0, 3.0, 3.0, 1.0]]), 3), [[1, 2, 0]])


def test_model_pass_matches_the_loop_on_captured_features_and_leaves_no_hooks():
    model, images, labels, loader = tiny_setup()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    result = find_influential_features(model, loader, InfluenceConfig(k1=3, k2=4))
    with torch.no_grad():
        features = model.penultimate(images).numpy()
    counts, indices = plain_loop_algorithm(features, labels.numpy(), 4, k1=3, k2=4)
    np.testing.assert_array_equal(result.statistics.counts, counts)
    np.testing.assert_array_equal(result.indices, indices)
    assert result.final_layer == "head"
    assert result.statistics.num_samples == 96
    with torch.no_grad():
        expected_accuracy = float((model(images).argmax(1) == labels).float().mean())
    assert result.statistics.accuracy == pytest.approx(expected_accuracy)
    assert hooks_on(model) == 0
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    assert set(result.indices_by_class()) == {"0", "1", "2", "3"}


def test_predicted_labels_group_by_the_models_argmax():
    model, images, labels, loader = tiny_setup()
    statistics = accumulate_influence(model, loader, k1=2, labels="predicted", progress=False)
    with torch.no_grad():
        predicted = model(images).argmax(1)
        features = model.penultimate(images).numpy()
    present = np.bincount(predicted.numpy(), minlength=4)
    np.testing.assert_array_equal(statistics.class_counts, present)
    counts, _ = plain_loop_algorithm(features, predicted.numpy(), 4, k1=2, k2=3)
    np.testing.assert_array_equal(statistics.counts, counts)
    assert statistics.accuracy == pytest.approx(float((predicted == labels).float().mean()))
    if (present == 0).any():  # this untrained model never predicts some class: no index set for it
        with pytest.raises(UserInputError, match="by the model's predictions"):
            find_influential_features(model, loader, InfluenceConfig(k1=2, k2=3, labels="predicted"), progress=False)


def test_features_at_a_unit_use_the_spatial_l1_norm_of_its_maps():
    model, images, labels, loader = tiny_setup()
    statistics = accumulate_influence(model, loader, k1=3, at="body.0", progress=False)
    with torch.no_grad():
        maps = model.body[2](model.body[1](model.body[0](images))).numpy()  # post-ReLU output of the first unit
    counts, _ = plain_loop_algorithm(maps, labels.numpy(), 4, k1=3, k2=3)
    np.testing.assert_array_equal(statistics.counts, counts)
    assert statistics.final_layer is None
    assert hooks_on(model) == 0
    with pytest.raises(UserInputError, match="no unit named"):
        accumulate_influence(model, loader, k1=3, at="nope", progress=False)
    with pytest.raises(UserInputError, match="needs at='final'"):
        find_influential_features(model, loader, InfluenceConfig(criterion="contribution", at="body.0"), progress=False)
    result = find_influential_features(model, loader, InfluenceConfig(k1=3, k2=3, at="body.0"), progress=False)
    np.testing.assert_array_equal(result.indices, select_top(counts, 3))
    assert result.final_layer is None


def test_contribution_criterion_is_the_mean_contribution_to_the_class_logit():
    model, images, labels, loader = tiny_setup()
    result = find_influential_features(model, loader, InfluenceConfig(k1=3, k2=4, criterion="contribution"))
    with torch.no_grad():
        features = model.penultimate(images).double().numpy()
    weight = model.head.weight.detach().double().numpy()
    expected = np.stack([features[labels.numpy() == c].mean(0) * weight[c] for c in range(4)])
    np.testing.assert_allclose(result.scores, expected, rtol=1e-9, atol=1e-12)
    for c in range(4):
        loop = sorted(range(12), key=lambda j: (-expected[c, j], j))[:4]
        assert list(result.indices[c]) == loop
    assert set(CRITERIA) >= {"l1", "contribution"}


# ----------------------------------------------------------------------------- bad input


def test_k_out_of_range_is_one_clear_error_before_any_pass():
    model, _, _, loader = tiny_setup()
    for config, fragment in [(InfluenceConfig(k1=13, k2=2), "k1=13"), (InfluenceConfig(k1=2, k2=13), "k2=13"),
                             (InfluenceConfig(k1=0, k2=2), "k1")]:
        with pytest.raises(UserInputError, match=fragment):
            find_influential_features(model, loader, config, progress=False)
    assert hooks_on(model) == 0


def test_a_model_without_a_final_linear_layer_is_named():
    model = ConvClassifier()
    with pytest.raises(UserInputError, match="Conv2d 'classifier'"):
        find_final_linear(model, (3, 8, 8))
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.int64)), batch_size=4)
    with pytest.raises(UserInputError, match="not nn.Linear"):
        find_influential_features(model, loader, progress=False)
    assert hooks_on(model) == 0


def test_a_class_without_instances_is_named():
    model, images, _, _ = tiny_setup()
    labels = torch.tensor([0, 1, 3] * 32)  # class 2 never occurs
    loader = DataLoader(TensorDataset(images, labels), batch_size=32)
    loader.dataset.classes = ["cat", "dog", "emu", "fox"]
    with pytest.raises(UserInputError, match="'emu' \\(label 2\\) has no instances"):
        find_influential_features(model, loader, progress=False)


def test_the_final_layer_is_found_by_what_runs_not_by_name():
    class Unusual(nn.Module):
        def __init__(self):
            super().__init__()
            self.aaa_last = nn.Linear(6, 3)  # defined first, runs last
            self.zzz_first = nn.Conv2d(3, 6, 3)

        def forward(self, x):
            return self.aaa_last(self.zzz_first(x).mean((2, 3)))

    final = find_final_linear(Unusual(), (3, 8, 8))
    assert final.name == "aaa_last" and final.in_features == 6


# ----------------------------------------------------------------------------- decomposed layer


def masked_dense(linear: nn.Linear, sets) -> torch.Tensor:
    mask = torch.zeros_like(linear.weight)
    for c, row in enumerate(sets):
        mask[c, list(row)] = 1
    return linear.weight * mask


@pytest.mark.parametrize("sets", [[[0, 3, 5], [1, 2, 3], [7, 6, 0], [4, 5, 1]], [[0], [1, 2, 3, 4], [], [7, 6]]])
def test_decomposed_layer_equals_a_masked_dense_linear_layer(sets):
    torch.manual_seed(0)
    linear = nn.Linear(8, 4)
    layer = DecomposedLinear.from_linear(linear, sets)
    x = torch.randn(10, 8)
    expected = F.linear(x, masked_dense(linear, sets), linear.bias)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.dense_weight(), masked_dense(linear, sets).detach())
    assert layer.index_sets() == [list(row) for row in sets]
    assert layer.flops() == 2 * sum(len(row) for row in sets)
    # Training changes only the selected weights: the dense equivalent stays zero elsewhere.
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    F.cross_entropy(layer(x), torch.randint(0, 4, (10,))).backward()
    optimizer.step()
    dense = layer.dense_weight()
    for c, row in enumerate(sets):
        outside = [j for j in range(8) if j not in row]
        assert torch.all(dense[c, outside] == 0)
    torch.testing.assert_close(layer(x), F.linear(x, dense, layer.bias))


def test_decomposed_flops_match_flop_counter_mode():
    layer = DecomposedLinear.from_linear(nn.Linear(64, 10), np.tile(np.arange(5), (10, 1)))
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(3, 64))
    assert counter.get_total_flops() == layer.flops(rows=3) == 2 * 3 * 50


def test_decompose_returns_a_new_model_and_leaves_the_callers_alone():
    model, images, _, _ = tiny_setup()
    sets = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    decomposed = decompose(model, sets, input_size=(3, 8, 8))
    assert isinstance(model.head, nn.Linear) and isinstance(decomposed.head, DecomposedLinear)
    with torch.no_grad():
        expected = F.linear(model.penultimate(images), masked_dense(model.head, sets), model.head.bias)
        torch.testing.assert_close(decomposed(images), expected)
    assert hooks_on(model) == 0 and hooks_on(decomposed) == 0
    with pytest.raises(UserInputError, match="one set per class"):
        decompose(model, sets[:3], input_size=(3, 8, 8))
    with pytest.raises(UserInputError, match="outside"):
        decompose(model, [[0], [1], [2], [12]], input_size=(3, 8, 8))


def test_evaluate_decomposition_in_one_pass():
    model, images, labels, loader = tiny_setup()
    everything = evaluate_decomposition(model, loader, [list(range(12))] * 4, progress=False)
    assert everything.accuracy_decomposed == everything.accuracy_full and everything.relative_accuracy == 1.0
    sets = [[0, 1], [2, 3], [4, 5], [6, 7]]
    result = evaluate_decomposition(model, loader, sets, progress=False)
    with torch.no_grad():
        features = model.penultimate(images)
        expected = float((F.linear(features, masked_dense(model.head, sets), model.head.bias).argmax(1) == labels)
                         .float().mean())
    assert result.accuracy_decomposed == pytest.approx(expected)
    assert result.flops_full == 2 * 12 * 4 and result.flops_decomposed == 2 * 8
    assert hooks_on(model) == 0


def test_retrain_head_improves_a_decomposed_head_on_separable_features():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    features = torch.rand(400, 8, generator=generator)
    features[torch.arange(400), labels * 2] += 2.0  # feature 2c marks class c
    layer = DecomposedLinear(torch.zeros(4, 8), torch.zeros(4), [[0, 1], [2, 3], [4, 5], [6, 7]])
    trained, history = retrain_head(layer, features, labels, epochs=3, lr=0.1, progress=False)
    assert accuracy_of_head(layer, features, labels) == 0.25  # all logits equal: argmax picks class 0
    assert accuracy_of_head(trained, features, labels) > 0.95
    assert len(history) == 3 and torch.equal(layer.weight, torch.zeros(4, 2))  # argument untouched


# ----------------------------------------------------------------------------- noise ablation


def test_replace_with_noise_draws_each_feature_from_its_own_distribution():
    features = torch.zeros(20000, 4)
    mean, std = np.array([0.0, 5.0, -3.0, 1.0]), np.array([1.0, 2.0, 0.5, 1.0])
    noised = replace_with_noise(features, [1, 2], mean, std, torch.Generator().manual_seed(0))
    assert torch.all(noised[:, [0, 3]] == 0) and torch.all(features == 0)
    np.testing.assert_allclose(noised[:, 1:3].mean(0).numpy(), [5.0, -3.0], atol=0.05)
    np.testing.assert_allclose(noised[:, 1:3].std(0).numpy(), [2.0, 0.5], atol=0.03)


def test_noise_ablation_hurts_when_the_informative_features_are_noised():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 4
    features = torch.randn(2000, 12, generator=generator) * 0.1
    features[torch.arange(2000), labels] += 1.0  # features 0-3 carry the class
    head = nn.Linear(12, 4)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, :4] = torch.eye(4)
        head.bias.zero_()
    mean, std = features.mean(0).numpy(), features.std(0).numpy()
    result = noise_ablation(features, labels, head, [0, 1, 2, 3], mean, std, repeats=3)
    assert result["accuracy_clean"] == 1.0
    assert result["accuracy_noninfluential_noised"] == 1.0
    assert result["accuracy_influential_noised"] < 0.5
    assert result["num_replaced"] == result["num_noninfluential_replaced"] == 4


def test_streaming_noise_ablation_on_a_model_removes_its_hook():
    model, images, labels, loader = tiny_setup()
    clean = evaluate_with_noise(model, loader, [], np.zeros(12), np.ones(12), progress=False)
    with torch.no_grad():
        assert clean == pytest.approx(float((model(images).argmax(1) == labels).float().mean()))
    evaluate_with_noise(model, loader, list(range(12)), np.zeros(12), np.ones(12), progress=False)
    assert hooks_on(model) == 0


# ----------------------------------------------------------------------------- views


def test_jaccard_overlap_values():
    overlap = jaccard_overlap([[0, 1, 2], [1, 2, 3], [7, 8, 9]])
    np.testing.assert_allclose(overlap, [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])


def test_binned_mutual_information_limits():
    generator = np.random.default_rng(0)
    labels = np.arange(8000) % 4
    features = np.stack([labels + generator.uniform(0, 0.5, 8000), generator.normal(size=8000)], 1)
    information = mutual_information(features, labels, 4, bins=8)
    assert information["overall"][0] == pytest.approx(2.0, abs=0.01)  # log2(4): the feature is the label
    assert information["overall"][1] < 0.01
    assert information["per_class"].shape == (4, 2)
    # one-vs-rest for a balanced 4-class label: H(1/4) = 0.811 bits
    np.testing.assert_allclose(information["per_class"][:, 0], 0.8113, atol=0.01)


def test_feature_maps_average_to_the_final_layer_input():
    model, images, _, _ = tiny_setup()
    maps = feature_maps(model, images[:5])
    assert maps.shape == (5, 12, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(maps.mean((2, 3)), model.penultimate(images[:5]))
    assert hooks_on(model) == 0


# ----------------------------------------------------------------------------- CSG


def test_csg_gates_pick_the_informative_features_and_stay_in_range():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 4
    features = torch.rand(2000, 16, generator=generator) * 0.5
    features[torch.arange(2000), labels] += 2.0  # feature c marks class c
    head = nn.Linear(16, 4)
    result = train_csg(head, features, labels, CSGConfig(epochs=6, lr=0.05, gate_lr=0.05, sparsity=3.0), progress=False)
    gates = result.gates
    assert gates.min() >= 0 and gates.max() <= 1
    assert result.model.density() < 0.6
    np.testing.assert_array_equal(csg_index_sets(gates, 1)[:, 0], [0, 1, 2, 3])
    assert all(c in row for c, row in enumerate(csg_sets_above(gates, 0.5)))
    assert accuracy_of_head(result.model, features, labels) > 0.95
    assert result.attempts == [{"gate_lr": 0.05, "diverged": False, "epochs_done": 6}]
    assert torch.equal(head.weight, result.model.head.weight) is False  # trained a copy
    logits = result.model.gated_logits(features[:3])
    expected = features[:3] @ (result.model.head.weight * result.model.gates).t() + result.model.head.bias
    torch.testing.assert_close(logits, expected)


def test_csg_retries_with_a_lower_gate_rate_when_it_diverges():
    labels = torch.arange(64) % 2
    features = torch.rand(64, 4)
    # Rates so large that the second step is no longer finite; every retry (gate rate / 10) fails too.
    config = CSGConfig(epochs=1, batch_size=8, gate_lr=1e38, lr=1e38, max_retries=2)
    with pytest.raises(FloatingPointError, match="diverged at every gate learning rate down to 1e\\+36"):
        train_csg(nn.Linear(4, 2), features, labels, config, progress=False)


# ----------------------------------------------------------------------------- CLI


def test_cli_influence_json_and_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["influence", "--model", "digits_cnn", "--data", "digits", "--k1", "3", "--k2", "4",
                 "--json", "--run-dir", str(run_dir)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(result["indices"]) == 10 and all(len(v) == 4 for v in result["indices"].values())
    assert result["relative_accuracy"] == pytest.approx(result["accuracy_decomposed"] / result["accuracy_full"])
    assert result["flops_final_full"] == 2 * 32 * 10 and result["flops_final_decomposed"] == 2 * 4 * 10
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["influence"]["indices"] == result["indices"]
    with np.load(run_dir / "arrays" / "influence_indices.npz") as arrays:
        assert arrays["indices"].shape == (10, 4)
        assert [list(map(int, row)) for row in arrays["indices"]] == list(result["indices"].values())
    assert {p.name for p in (run_dir / "figures").iterdir()} >= {"influence_counts.png", "influence_jaccard.png"}


def test_cli_influence_bad_k_exits_2_with_one_sentence(capsys):
    code = main(["influence", "--model", "digits_cnn", "--data", "digits", "--k1", "33", "--json"])
    err = capsys.readouterr().err
    assert code == 2
    assert "k1=33 is outside [1, 32]" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- real data


@pytest.mark.shared
@pytest.mark.slow
def test_resnet20_decomposition_keeps_most_accuracy_on_cifar10_jpeg(capsys):
    require_shared(CIFAR_ZIP, RESNET20)
    code = main(["influence", "--model", "resnet20", "--weights", str(RESNET20), "--data", str(CIFAR_ZIP),
                 "--k1", "5", "--k2", "5", "--json", "--threads", "2"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["accuracy_full"] == pytest.approx(0.8103, abs=0.001)
    assert result["relative_accuracy"] >= 0.92


def test_r_a_grid_cells_match_single_runs_and_keeping_every_feature_loses_nothing(tmp_path, capsys):
    from filterscope.methods.influence.k_grid import relative_accuracy_grid

    run_dir = tmp_path / "run"
    code = main(["influence", "--model", "digits_cnn", "--data", "digits", "--k1", "3", "--k2", "4",
                 "--k-grid", "1", "3", "4", "32", "--json", "--run-dir", str(run_dir)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    grid = result["r_a_grid"]
    values = np.asarray(grid["values"])
    assert grid["ks"] == [1, 3, 4, 32] and values.shape == (4, 4)
    assert np.allclose(values[:, 3], 1.0)  # k2 = every feature: the decomposed layer is the full layer
    # the (k1 = 3, k2 = 4) cell is the run's own decomposed layer (same index sets, same evaluation split)
    assert values[1, 2] == pytest.approx(result["relative_accuracy"], abs=1e-4)
    assert grid["accuracy_full"] == pytest.approx(result["accuracy_full"])
    assert (run_dir / "figures" / "influence_kgrid.png").stat().st_size > 1000
    model, _, _, loader = tiny_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tiny = relative_accuracy_grid(model, loader, loader, [1, 2], example_input=(3, 8, 8))
    assert hooks_on(model) == 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert tiny.values.shape == (2, 2) and np.isfinite(tiny.values).all()
    with pytest.raises(UserInputError, match="k grid must hold values in"):
        relative_accuracy_grid(model, loader, loader, [1, 99], example_input=(3, 8, 8))
