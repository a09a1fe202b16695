"""The Hopkins statistic and the decision tree of a decoupled network (issue 37, item 2)."""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import filterscope as fs
from filterscope.analyses.hopkins import hopkins_sample_size, hopkins_statistic
from filterscope.analyses.hopkins_tree import HopkinsTreeConfig, build_hopkins_tree, hopkins_tree
from cli_helpers import assert_one_clear_error, run_cli
from filterscope.core.hooks import hook_count
from filterscope.models import create_model, save_atomically

FIXTURE = Path(__file__).parent / "fixtures" / "decoupled_digits_demo.pt"


# --- the Hopkins statistic ------------------------------------------------------------------------

def test_hopkins_is_about_one_half_on_uniform_data():
    rng = np.random.default_rng(0)
    continuous = [hopkins_statistic(rng.random((400, 5)), seed=s) for s in range(8)]
    binary = [hopkins_statistic((rng.random((400, 24)) < 0.5).astype(float), seed=s) for s in range(8)]
    assert abs(np.mean(continuous) - 0.5) < 0.03
    assert abs(np.mean(binary) - 0.5) < 0.03


def test_hopkins_is_above_0_9_on_separated_clusters():
    rng = np.random.default_rng(1)
    centres = rng.random((3, 6)) * 10
    points = np.concatenate([centre + 0.05 * rng.standard_normal((100, 6)) for centre in centres])
    assert hopkins_statistic(points, seed=0) > 0.9
    prototypes = np.array([[0] * 12 + [1] * 12, [1] * 12 + [0] * 12], dtype=float)  # binary: two gate patterns
    noisy = np.abs(np.repeat(prototypes, 150, axis=0) - (rng.random((300, 24)) < 0.01))
    assert hopkins_statistic(noisy, seed=0) > 0.9


def test_hopkins_is_seeded_and_undefined_for_identical_points():
    points = np.random.default_rng(2).random((50, 3))
    assert hopkins_statistic(points, seed=4) == hopkins_statistic(points, seed=4)
    assert hopkins_statistic(points, seed=4) != hopkins_statistic(points, seed=5)
    assert math.isnan(hopkins_statistic(np.ones((20, 4)), seed=0))


def test_hopkins_sample_size_and_bad_input():
    assert hopkins_sample_size(2000) == 200 and hopkins_sample_size(50) == 10 and hopkins_sample_size(5) == 4
    assert hopkins_sample_size(100_000) == 1000
    with pytest.raises(fs.UserInputError, match="at least 3 points"):
        hopkins_statistic(np.zeros((2, 3)))
    with pytest.raises(fs.UserInputError, match="sample_size"):
        hopkins_statistic(np.random.default_rng(0).random((10, 2)), sample_size=10)


# --- the tree on constructed paths ----------------------------------------------------------------

def two_populations(differing_layer: int, layers: int = 4, width: int = 16, per_population: int = 200, seed: int = 0):
    """Gate vectors of two populations: uniform random bits at every layer but ``differing_layer``, where
    each population sits near its own pattern (2 % of bits flipped)."""
    rng = np.random.default_rng(seed)
    n = 2 * per_population
    labels = np.repeat([0, 1], per_population)
    gates = [(rng.random((n, width)) < 0.5).astype(np.uint8) for _ in range(layers)]
    patterns = np.array([[0, 1] * (width // 2), [1, 0] * (width // 2)], dtype=np.uint8)
    flips = (rng.random((n, width)) < 0.02).astype(np.uint8)
    gates[differing_layer] = patterns[labels] ^ flips
    return gates, labels


@pytest.mark.parametrize("differing_layer", [0, 2, 3])
def test_the_tree_splits_two_populations_where_they_differ_and_nowhere_else(differing_layer):
    gates, labels = two_populations(differing_layer)
    names = [f"layer{k}" for k in range(len(gates))]
    result = build_hopkins_tree(gates, labels, names, HopkinsTreeConfig(threshold=0.75, min_size=20), ["a", "b"])
    nodes = list(result.root.walk())
    assert [node.split_layer for node in nodes if node.children] == [differing_layer]
    parts = [set(labels[child.indices]) for child in result.root.children]
    assert sorted(map(tuple, parts)) == [(0,), (1,)]  # exactly the two populations
    assert all(value < 0.75 for node in nodes for layer, value in node.hopkins.items() if layer != differing_layer)
    summary = result.summary()
    assert summary["splits"] == 1 and summary["leaves"] == 2
    assert summary["splits_per_layer"] == {name: int(k == differing_layer) for k, name in enumerate(names)}
    assert summary["class_parting"]["per_class"]["a"]["first_parts_at"] == names[differing_layer]
    assert summary["class_parting"]["per_class"]["a"]["parts_from"] == ["b"]
    assert summary["class_parting"]["pairwise_layer_index"] == [[-1, differing_layer], [differing_layer, -1]]
    tree = json.loads(json.dumps(summary["tree"]))  # JSON-able
    assert tree["layer"] == names[differing_layer] and tree["size"] == 400 and tree["class_histogram"] == {"a": 200, "b": 200}
    assert tree["hopkins"] > 0.9 and [child["size"] for child in tree["children"]] == [200, 200]


def test_no_split_on_uniform_paths_and_none_below_the_minimum_size():
    rng = np.random.default_rng(3)
    gates = [(rng.random((300, 16)) < 0.5).astype(np.uint8) for _ in range(3)]
    labels = rng.integers(0, 3, 300)
    result = build_hopkins_tree(gates, labels, ["a", "b", "c"], HopkinsTreeConfig(min_size=20))
    assert result.summary()["splits"] == 0 and len(result.root.hopkins) == 3
    separated, labels = two_populations(1)
    # Population 0 splits again at layer 2 into halves of 100: seen with groups of 20, not with groups of 250.
    separated[2][:200] = np.repeat(np.array([[0] * 8 + [1] * 8, [1] * 8 + [0] * 8], dtype=np.uint8), 100, axis=0)
    nested = build_hopkins_tree(separated, labels, list("abcd"), HopkinsTreeConfig(min_size=20))
    assert [node.split_layer for node in nested.root.walk() if node.children] == [1, 2]
    small = build_hopkins_tree(separated, labels, list("abcd"), HopkinsTreeConfig(min_size=250))
    assert [node.split_layer for node in small.root.walk() if node.children] == [1]
    assert all(child.hopkins == {} and not child.children for child in small.root.children)  # 200 < 250: not examined
    low = build_hopkins_tree(separated, labels, list("abcd"), HopkinsTreeConfig(threshold=0.999, min_size=20))
    assert low.summary()["splits"] == 0  # above every H: nothing splits


def test_tree_bad_input():
    gates, labels = two_populations(1)
    with pytest.raises(fs.UserInputError, match="threshold"):
        HopkinsTreeConfig(threshold=1.5).validate()
    with pytest.raises(fs.UserInputError, match="min_size"):
        HopkinsTreeConfig(min_size=2).validate()
    with pytest.raises(fs.UserInputError, match="one gate array per gated layer"):
        build_hopkins_tree(gates[:2], labels, list("abcd"))
    with pytest.raises(fs.UserInputError, match="at least min_size"):
        build_hopkins_tree([g[:10] for g in gates], labels[:10], list("abcd"), HopkinsTreeConfig(min_size=20))


# --- the tree of the digits demo ------------------------------------------------------------------

def test_tree_of_the_digits_demo_is_fast_consistent_and_leaves_the_model_alone():
    model = fs.load_decoupled(FIXTURE)
    dataset = fs.load_dataset("digits", "test", mean=model.input_mean, std=model.input_std)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.train()
    start = time.process_time()
    result = hopkins_tree(model, DataLoader(dataset, batch_size=128), HopkinsTreeConfig(min_size=20), progress=False)
    assert time.process_time() - start < 20  # CPU time: the bound holds on a busy machine too
    assert model.training and hook_count(model) == 0
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    nodes = list(result.root.walk())
    for node in nodes:
        if node.children:
            assert sum(len(child.indices) for child in node.children) == len(node.indices)
            assert node.hopkins[node.split_layer] > 0.75
    tree = result.to_dict()
    assert tree["size"] == len(dataset) == sum(tree["class_histogram"].values())
    assert result.summary()["splits"] >= 1


# --- the CLI --------------------------------------------------------------------------------------

def test_cli_tree_writes_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "tree", "--weights", FIXTURE, "--data", "digits", "--run-dir", run, "--min-size", 20,
                             "--threads", 1, "--quiet", "--json")
    assert code == 0, err
    summary = json.loads(out)
    metrics = json.loads((run / "metrics.json").read_text())["path_tree"]
    assert metrics == summary and metrics["num_inputs"] == 359 and metrics["config"]["min_size"] == 20
    assert set(metrics["class_parting"]) == {str(d) for d in range(10)}
    tree = json.loads((run / "arrays" / "path_tree.json").read_text())
    assert tree["tree"]["size"] == 359 and tree["splits"] == metrics["splits"]
    with np.load(run / "arrays" / "path_tree.npz") as arrays:
        assert arrays["pairwise_parting_layer"].shape == (10, 10) and len(arrays["sample_indices"]) == 359
    for figure in ("path_tree.png", "class_parting.png"):
        assert (run / "figures" / figure).stat().st_size > 1000
    assert (run / "tree.yaml").is_file() and "report.html" in err
    code, _, err = run_cli(capsys, "tree", "--weights", FIXTURE, "--data", "digits", "--run-dir", run, "--quiet")
    assert_one_clear_error(code, err, "already holds a 'path_tree' analysis", "--overwrite")


def test_cli_tree_reads_a_decouple_run_directory(tmp_path, capsys):
    import shutil

    (tmp_path / "decoupled" / "checkpoints").mkdir(parents=True)
    shutil.copyfile(FIXTURE, tmp_path / "decoupled" / "checkpoints" / "last.pt")
    code, out, err = run_cli(capsys, "tree", "--weights", tmp_path / "decoupled", "--data", "digits", "--samples", 100,
                             "--min-size", 20, "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["num_inputs"] == 100 and json.loads(out)["tree"]["size"] == 100  # no run directory: the tree printed
    code, _, err = run_cli(capsys, "tree", "--weights", tmp_path, "--data", "digits", "--quiet")
    assert_one_clear_error(code, err, "has no checkpoints/last.pt")


def test_cli_tree_bad_input(tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    save_atomically({"state_dict": create_model("digits_cnn", 10).state_dict()}, plain)
    code, _, err = run_cli(capsys, "tree", "--weights", plain, "--data", "digits", "--quiet")
    assert_one_clear_error(code, err, "without gates", "decouple it first")
    code, _, err = run_cli(capsys, "tree", "--weights", FIXTURE, "--data", "digits", "--samples", 10, "--quiet")
    assert_one_clear_error(code, err, "--samples 10 is too few", "at least 50")
    code, _, err = run_cli(capsys, "tree", "--weights", FIXTURE, "--data", "digits", "--samples", 5000, "--quiet")
    assert_one_clear_error(code, err, "more than the 359 images")
    code, _, err = run_cli(capsys, "tree", "--weights", FIXTURE, "--data", "digits", "--threshold", 1.2, "--quiet")
    assert_one_clear_error(code, err, "threshold must be in (0, 1)")
    code, _, err = run_cli(capsys, "tree", "--weights", tmp_path / "missing.pt", "--data", "digits", "--quiet")
    assert code == 2 and "Traceback" not in err
