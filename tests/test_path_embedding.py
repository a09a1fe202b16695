"""Path embedding of a decoupled network beside the dense baselines (issue 37, item 1)."""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import filterscope as fs
from filterscope.analyses.embedding_scores import (class_entropy, hash_rows, layer_mutual_information,
                                                  per_filter_mutual_information)
from filterscope.analyses.path_embedding import PathEmbeddingConfig, dense_responses, embed_features, path_embedding
from cli_helpers import assert_one_clear_error, run_cli
from filterscope.core.hooks import hook_count
from filterscope.engine import base_network
from filterscope.models import create_model, save_atomically

FIXTURE = Path(__file__).parent / "fixtures" / "decoupled_digits_demo.pt"


def one_hot_paths(classes: int = 10, per_class: int = 12):
    labels = np.repeat(np.arange(classes), per_class)
    return np.eye(classes, dtype=np.uint8)[labels], labels


def test_paths_that_name_the_class_score_perfectly():
    paths, labels = one_hot_paths()
    result = embed_features({"decoupled_paths": paths}, labels, ["first", "second"], [5, 5])
    scores = result.representations["decoupled_paths"]
    assert scores.knn_accuracy == 1.0
    assert scores.silhouette_pca == pytest.approx(1.0)  # every class sits on one point
    assert scores.silhouette_embedding > 0.5  # t-SNE (perplexity 30 > 12 inputs per class) spreads each point a little
    assert scores.dims == 10 and scores.pca_dims == 10 and scores.on_fraction == pytest.approx(0.1)
    # "first" names classes 0-4 and puts 5-9 on one vector: I = H(C) - H(C | Z) = log 10 - ½ log 5.
    first = scores.mutual_information["first"]
    assert first["mi_nats"] == pytest.approx(math.log(10) - 0.5 * math.log(5))
    assert first["distinct_vectors"] == 6 and first["class_entropy_nats"] == pytest.approx(math.log(10))
    assert first["plug_in_bias_nats"] == pytest.approx(5 * 9 / (2 * 120))
    assert 0 < first["mi_adjusted"] < 1
    assert first["per_filter_mi_nats"] == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))
    summary = json.loads(json.dumps(result.summary()))
    assert summary["knn_test_inputs"] == 40 and summary["knn_train_inputs"] == 80 and summary["knn_chance"] == 0.1
    assert result.arrays()["embedding_decoupled_paths"].shape == (120, 2)


def test_paths_independent_of_the_class_score_near_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    paths = (rng.random((200, 40)) < 0.5).astype(np.uint8)
    scores = embed_features({"decoupled_paths": paths}, labels, ["only"], [40]).representations["decoupled_paths"]
    assert scores.knn_accuracy < 0.45  # chance 0.25
    assert abs(scores.silhouette_pca) < 0.05
    information = scores.mutual_information["only"]
    assert information["distinct_vectors"] == 200 and information["mi_nats"] == pytest.approx(class_entropy(labels))
    assert abs(information["mi_adjusted"]) < 0.05  # every path distinct: plug-in says everything, adjusted nothing


def test_hash_rows_and_mutual_information_of_a_constant_layer():
    rows = np.array([[0, 1, 1], [0, 1, 1], [1, 0, 0], [0, 1, 1]])
    hashed = hash_rows(rows)
    assert hashed[0] == hashed[1] == hashed[3] != hashed[2]
    constant = layer_mutual_information(np.ones((30, 4), dtype=np.uint8), np.arange(30) % 3)
    assert constant["mi_nats"] == pytest.approx(0.0) and constant["distinct_vectors"] == 1


def test_per_filter_mutual_information_equals_scikit_learn_column_by_column():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 300)
    bits = (rng.random((300, 12)) < np.linspace(0.0, 1.0, 12)).astype(np.uint8)  # includes constant columns
    bits[:, 5] = labels % 2  # one column that carries part of the class
    expected = [mutual_info_score(labels, column) for column in bits.T]
    assert np.allclose(per_filter_mutual_information(bits, labels), expected, atol=1e-12)


def test_embed_features_bad_input():
    paths, labels = one_hot_paths()
    with pytest.raises(fs.UserInputError, match="at least 20 inputs"):
        embed_features({"decoupled_paths": paths[:10]}, labels[:10], ["a"], [10])
    with pytest.raises(fs.UserInputError, match="at least two classes"):
        embed_features({"decoupled_paths": paths[:30]}, np.zeros(30, dtype=int), ["a"], [10])
    with pytest.raises(fs.UserInputError, match="one column per filter"):
        embed_features({"decoupled_paths": paths}, labels, ["a"], [12])
    with pytest.raises(fs.UserInputError, match="neighbours"):
        PathEmbeddingConfig(neighbours=0).validate()
    with pytest.raises(fs.UserInputError, match="test_fraction"):
        PathEmbeddingConfig(test_fraction=1.0).validate()


def test_digits_demo_embedding_beside_the_dense_baselines():
    model = fs.load_decoupled(FIXTURE)
    dense = base_network(model)
    dataset = fs.load_dataset("digits", "test", mean=model.input_mean, std=model.input_std)
    loader = DataLoader(dataset, batch_size=128)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    start = time.process_time()
    result = path_embedding(model, loader, dense_network=dense, progress=False)
    assert time.process_time() - start < 20  # CPU time: the bound holds on a busy machine too
    assert not model.training and hook_count(model) == 0 and hook_count(dense) == 0
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert set(result.representations) == {"decoupled_paths", "dense_binary", "dense_real"}
    record = fs.collect_paths(model, loader, progress=False)
    scores = result.representations["decoupled_paths"]
    assert scores.on_fraction == pytest.approx(record.paths().mean())
    responses, labels = dense_responses(dense, model.gated_units, loader, (1, 8, 8), progress=False)
    assert np.array_equal(labels, record.labels) and responses.shape == (359, 64)
    assert result.representations["dense_binary"].on_fraction == pytest.approx((responses > 0).mean())
    for name, representation in result.representations.items():
        assert representation.dims == 64 and set(representation.mutual_information) == set(model.gated_units)
        assert 0.1 < representation.knn_accuracy <= 1.0, name
        assert -1 <= representation.silhouette_embedding <= 1
    # The decoupled model's paths carry the class far better than the dense filters' on/off pattern here.
    assert scores.knn_accuracy > result.representations["dense_binary"].knn_accuracy + 0.2


def test_dense_network_without_the_gated_units_is_refused():
    model = fs.load_decoupled(FIXTURE)
    dataset = fs.load_dataset("digits", "test", mean=model.input_mean, std=model.input_std)
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    other(torch.zeros(1, 1, 8, 8))
    with pytest.raises(fs.UserInputError, match="no conv unit named 'features.3'"):
        path_embedding(model, DataLoader(dataset, batch_size=128), dense_network=other, progress=False)


# --- the CLI --------------------------------------------------------------------------------------

def test_cli_embed_writes_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    dense = tmp_path / "dense.pt"
    save_atomically({"state_dict": base_network(fs.load_decoupled(FIXTURE)).state_dict()}, dense)
    code, out, err = run_cli(capsys, "embed", "--weights", FIXTURE, "--data", "digits", "--run-dir", run, "--samples", 200,
                             "--neighbours", 3, "--dense-weights", dense, "--threads", 1, "--quiet", "--json")
    assert code == 0, err
    summary = json.loads(out)
    metrics = json.loads((run / "metrics.json").read_text())["path_embedding"]
    assert metrics == summary and metrics["num_inputs"] == 200 and metrics["knn_neighbours"] == 3
    assert set(metrics["representations"]) == {"decoupled_paths", "dense_binary", "dense_real"}
    assert metrics["dense_source"] == str(dense) and metrics["classes"] == [str(d) for d in range(10)]
    with np.load(run / "arrays" / "path_embedding.npz") as arrays:
        assert arrays["embedding_dense_real"].shape == (200, 2) and len(np.unique(arrays["sample_indices"])) == 200
    assert (run / "figures" / "path_embedding.png").stat().st_size > 1000
    assert (run / "embed.yaml").is_file() and "report.html" in err
    code, out, _ = run_cli(capsys, "embed", "--weights", FIXTURE, "--data", "digits", "--samples", 60, "--quiet")
    assert code == 0 and "decoupled_paths" in out and "dense_real" in out  # no run directory: printed only


def test_cli_embed_bad_input(tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    save_atomically({"state_dict": create_model("digits_cnn", 10).state_dict()}, plain)
    code, _, err = run_cli(capsys, "embed", "--weights", plain, "--data", "digits", "--quiet")
    assert_one_clear_error(code, err, "without gates", "decouple it first")
    code, _, err = run_cli(capsys, "embed", "--weights", FIXTURE, "--data", "digits", "--dense-weights", FIXTURE, "--quiet")
    assert_one_clear_error(code, err, "--dense-weights", "is a decoupled checkpoint")
    code, _, err = run_cli(capsys, "embed", "--weights", FIXTURE, "--data", "digits", "--samples", 5, "--quiet")
    assert_one_clear_error(code, err, "--samples 5 is too few", "at least 20")
    code, _, err = run_cli(capsys, "embed", "--weights", FIXTURE, "--data", "digits", "--samples", 400, "--quiet")
    assert_one_clear_error(code, err, "more than the 359 images")
    code, _, err = run_cli(capsys, "embed", "--weights", FIXTURE, "--data", "cifar10_missing_folder", "--quiet")
    assert code == 2 and "Traceback" not in err
