"""Adversarial detection from calculation paths (issue 38): attacks against a reference, CDRP, features,
detectors, the pipeline and the CLI, on the digits demo checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import filterscope as fs
from filterscope.analyses.adversarial import AdversarialConfig, LabelledImages, run
from filterscope.analyses.adversarial_features import DEFAULT_FEATURES, image_features, path_features, pooled_activations, units_named
from filterscope.analyses.attacks import AttackConfig, attack
from filterscope.analyses.detection import DetectionConfig
from filterscope.analyses.routing_paths import CriticalPathConfig, critical_routing_paths
from filterscope.cli import main
from filterscope.core.hooks import hook_count
from filterscope.engine import base_network

FIXTURE = Path(__file__).parent / "fixtures" / "decoupled_digits_demo.pt"
MEAN, STD = (0.5,), (0.5,)


@pytest.fixture(scope="module")
def decoupled():
    return fs.load_decoupled(FIXTURE)


@pytest.fixture(scope="module")
def dense(decoupled):
    return base_network(decoupled)


def first_per_class(split: str, per_class: int) -> LabelledImages:
    dataset = fs.load_dataset("digits", split, mean=MEAN, std=STD)
    indices = np.concatenate([np.flatnonzero(dataset.targets == c)[:per_class] for c in range(10)])
    return LabelledImages(torch.stack([dataset[int(i)][0] for i in indices]), dataset.targets[indices])


@pytest.fixture(scope="module")
def test_images():
    return first_per_class("test", 6)


def reference_fgsm(model: nn.Module, pixels: torch.Tensor, classes: torch.Tensor, eps: float, targeted: bool) -> torch.Tensor:
    """Textbook FGSM on pixels in [0, 1]: p ± ε · sign ∇_p CE(f((p − μ)/σ), y), clipped to [0, 1]."""
    pixels = pixels.clone().requires_grad_()
    loss = F.cross_entropy(model((pixels - MEAN[0]) / STD[0]), classes, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, pixels)
    step = -eps if targeted else eps
    return (pixels + step * gradient.sign()).clamp(0, 1).detach()


class Confident(nn.Module):
    """The model's logits × 50: a saturated softmax, as on confidently classified images."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return 50 * self.model(images)


@pytest.mark.parametrize("targeted", [False, True])
def test_captum_fgsm_with_threshold_zero_is_the_textbook_attack(decoupled, test_images, targeted):
    labels = torch.as_tensor(test_images.labels)
    targets = (labels + 1) % 10 if targeted else None
    result = attack(decoupled, test_images.images, labels, mean=MEAN, std=STD,
                    config=AttackConfig("fgsm", eps=0.1), targets=targets)
    pixels = test_images.images * STD[0] + MEAN[0]
    expected = reference_fgsm(decoupled, pixels, targets if targeted else labels, 0.1, targeted)
    assert torch.allclose(result.adversarial * STD[0] + MEAN[0], expected, atol=1e-6)
    assert result.adversarial_predictions.tolist() == decoupled(result.adversarial).argmax(1).tolist()


def test_captum_default_threshold_skips_pixels_on_confident_models(decoupled, test_images):
    confident = Confident(decoupled).eval()
    pixels = test_images.images * STD[0] + MEAN[0]
    labels = torch.as_tensor(test_images.labels)
    moved = {}
    for threshold in (1e-6, 0.0):
        result = attack(confident, test_images.images, labels, mean=MEAN, std=STD,
                        config=AttackConfig("fgsm", eps=0.1, zero_gradient_threshold=threshold))
        moved[threshold] = float(((result.adversarial * STD[0] + MEAN[0]) - pixels).abs().gt(1e-6).float().mean())
    expected = reference_fgsm(confident, pixels, labels, 0.1, False)
    assert moved[0.0] == pytest.approx(float((expected - pixels).abs().gt(1e-6).float().mean()))
    assert moved[1e-6] < 0.6 * moved[0.0]  # captum's default leaves many more pixels alone


def test_pgd_stays_in_the_ball_and_a_targeted_attack_reaches_its_target(decoupled, test_images):
    labels = torch.as_tensor(test_images.labels)
    targets = (labels + 1) % 10
    before = {k: v.clone() for k, v in decoupled.state_dict().items()}
    result = attack(decoupled, test_images.images, labels, mean=MEAN, std=STD,
                    config=AttackConfig("pgd", eps=0.3, steps=20), targets=targets)
    pixels, adversarial = test_images.images * 0.5 + 0.5, result.adversarial * 0.5 + 0.5
    assert float((adversarial - pixels).abs().max()) <= 0.3 + 1e-5
    assert float(adversarial.min()) >= -1e-6 and float(adversarial.max()) <= 1 + 1e-6
    assert result.summary()["success_rate"] > 0.8
    assert (result.adversarial_predictions[result.success] == targets.numpy()[result.success]).all()
    assert all(torch.equal(before[k], v) for k, v in decoupled.state_dict().items())
    assert hook_count(decoupled) == 0 and not decoupled.training


def test_training_flags_come_back_module_by_module(decoupled, test_images):
    wrapper = Confident(decoupled)  # in training mode, around a model in evaluation mode
    attack(wrapper, test_images.images[:4], test_images.labels[:4], mean=MEAN, std=STD, config=AttackConfig(eps=0.1))
    assert wrapper.training and not any(module.training for module in decoupled.modules())


def test_attack_settings_are_checked():
    for config, words in ((AttackConfig(eps=1.5), "outside (0, 1]"), (AttackConfig(eps=0.0), "outside (0, 1]"),
                          (AttackConfig("cw"), "unknown attack"), (AttackConfig(steps=0), "at least 1")):
        with pytest.raises(fs.UserInputError, match=words.replace("(", r"\(").replace("]", r"\]")):
            config.validate()


def test_critical_routing_paths_keep_the_prediction_and_are_sparse(decoupled, dense, test_images):
    units = units_named(dense, decoupled.gated_units, decoupled.input_shape)
    sparse = critical_routing_paths(dense, units, test_images.images, CriticalPathConfig(l1=0.05))
    assert sparse.gates.shape == (len(test_images.labels), sum(decoupled.out_channels))
    assert sparse.kept_prediction >= 0.95
    assert sparse.open_fraction < 0.75 and float(sparse.gates.mean()) < 0.5
    assert (sparse.gates >= 0).all()
    unpenalised = critical_routing_paths(dense, units, test_images.images, CriticalPathConfig(l1=0.0, steps=5))
    assert unpenalised.open_fraction == 1.0 and unpenalised.kept_prediction == 1.0
    assert hook_count(dense) == 0 and all(p.grad is None for p in dense.parameters())


def test_critical_routing_paths_remove_their_hooks_after_an_error(decoupled, dense):
    units = units_named(dense, decoupled.gated_units, decoupled.input_shape)
    with pytest.raises(RuntimeError):
        critical_routing_paths(dense, units, torch.zeros(2, 3, 8, 8))  # three channels for a one-channel network
    assert hook_count(dense) == 0 and not dense.training


def test_features_of_the_same_units(decoupled, dense, test_images):
    images = test_images.images
    features = image_features(decoupled, dense, images, ("path", "gate_scores", "dense_binary", "dense_real"))
    with torch.no_grad():
        decoupled(images)
    gates = torch.cat(decoupled.last_gates(), dim=1).numpy()
    assert np.array_equal(features["path"], gates)
    logits = torch.cat([slot.gate_logits for slot in decoupled.slots], dim=1).numpy()
    assert np.allclose(features["gate_scores"], logits, atol=1e-6)
    assert np.array_equal(features["gate_scores"] > 0, features["path"] > 0)  # the path is the scores' sign
    with torch.no_grad():  # features.3 is read after features.5 (its ReLU), features.7 after features.9
        expected = torch.cat([dense.features[:6](images).mean((2, 3)), dense.features[:10](images).mean((2, 3))], 1)
    assert np.allclose(features["dense_real"], expected.numpy(), atol=1e-5)
    assert np.array_equal(features["dense_binary"], (features["dense_real"] > 0).astype(np.float32))
    assert features["path"].shape[1] == features["dense_real"].shape[1] == 64
    assert hook_count(dense) == 0 and hook_count(decoupled) == 0


def small_config(**changes) -> AdversarialConfig:
    settings = dict(eps=0.2, detection=DetectionConfig(classifiers=("random_forest",), n_per_class=(1, 5), runs=2),
                    critical=CriticalPathConfig(steps=10), pair=(3, 8))
    return AdversarialConfig(**{**settings, **changes})


def test_detection_pipeline_on_digits_beats_chance_repeatably_and_fast(decoupled, dense):
    train, test = first_per_class("train", 10), first_per_class("test", 20)
    started = time.process_time()
    first = run(decoupled, dense, train, test, small_config(), mean=MEAN, std=STD)
    seconds = time.process_time() - started
    assert seconds < 30
    second = run(decoupled, dense, train, test, small_config(pair=None), mean=MEAN, std=STD)
    assert [row["aucs"] for row in first.table()] == [row["aucs"] for row in second.table()]
    grid = {(g.train_attack, g.test_attack): g for g in first.grids}
    assert set(grid) == {("fgsm", "fgsm"), ("pgd", "pgd"), ("fgsm", "pgd")}
    assert grid["pgd", "pgd"].auc("random_forest", 5, "path")["auc_mean"] > 0.85
    assert grid["pgd", "pgd"].auc("random_forest", 5, "dense_real")["auc_mean"] > 0.85
    for summary in first.attacks.values():
        test_attack = summary["test"]
        assert test_attack["successful"] + test_attack["dropped_attack_failed"] == test_attack["correct_before"]
        assert test_attack["success_rate"] > 0.8
    pair = first.pair.summary()
    assert pair["counts"]["real a"] == 20 and pair["counts"]["adversarial a→b"] > 10
    # the adversarial 3 → 8 paths have moved away from real 3s
    assert pair["mean_hamming"]["adversarial_to_real_a"] > pair["mean_hamming"]["within_real_a"]
    assert "| random_forest | 5 |" in first.markdown()


def run_cli(*flags: str) -> int:
    return main(["adversarial", str(FIXTURE), "--data", "digits", "--quiet", *flags])


def test_cli_writes_metrics_arrays_figures_and_table(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = run_cli("--eps", "0.2", "--n", "1", "--runs", "1", "--pool-per-class", "3", "--test-per-class", "8",
                   "--classifiers", "random_forest", "--cdrp-steps", "5", "--pair", "3", "8", "--run-dir", str(run_dir),
                   "--json")
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())["adversarial"]
    assert printed["table"] == metrics["table"] and len(metrics["table"]) == 3 * len(DEFAULT_FEATURES)
    assert metrics["images"] == {"train_pool": 30, "test": 80}
    assert metrics["pair"]["source"] == "3" and metrics["pair"]["target"] == "8"
    arrays = np.load(run_dir / "arrays" / "adversarial.npz")
    assert arrays["auc_fgsm_to_pgd"].shape == (1, 1, len(DEFAULT_FEATURES)) and arrays["pair_frequencies"].shape == (3, 64)
    for name in ("adversarial_auc", "adversarial_pair_frequencies", "adversarial_pair_embedding"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000
    assert "trained on FGSM, tested on PGD" in (run_dir / "adversarial.md").read_text()
    assert (run_dir / "report.html").is_file()


@pytest.mark.parametrize("flags, words", [
    (["--eps", "1.5"], "outside (0, 1]"),
    (["--eps", "0"], "outside (0, 1]"),
    (["--n", "20", "--pool-per-class", "10"], "lower --n or raise --pool-per-class"),
    (["--pair", "3", "cat"], "unknown class 'cat'"),
    (["--pair", "3", "3"], "the same"),
    (["--attack", "fgsm", "--eps", "1e-4", "--features", "path", "--pool-per-class", "2", "--test-per-class", "2",
      "--n", "1", "--no-pair"], "nothing to detect"),
])
def test_cli_bad_input_is_one_sentence_and_exit_code_2(flags, words, capsys):
    assert run_cli(*flags) == 2
    error = capsys.readouterr().err.strip()
    assert words in error and error.count("\n") == 0 and "Traceback" not in error


def test_cli_refuses_a_model_without_gates(tmp_path, capsys):
    dense_checkpoint = tmp_path / "dense.pt"
    torch.save({"state_dict": fs.create_model("digits_cnn", 10).state_dict()}, dense_checkpoint)
    assert main(["adversarial", str(dense_checkpoint), "--data", "digits", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "without gates; decouple it first" in error
    assert main(["adversarial", str(tmp_path / "missing.pt"), "--data", "digits", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_detector_that_cannot_be_fitted_counts_as_chance_with_a_warning():
    from filterscope.analyses.detection import DetectionData, detection_grid

    # real and adversarial images take the same path: nothing to learn, and AdaBoost's first stump errs on exactly
    # half of the 4 training rows, which scikit-learn refuses as "worse than random"
    data = DetectionData(clean={"path": np.ones((2, 4))}, adversarial={"path": np.ones((2, 4))}, labels=np.zeros(2, int),
                         source=np.arange(2))
    grid = detection_grid(data, data, ["path"], DetectionConfig(classifiers=("adaboost",), n_per_class=(2,), runs=2),
                          train_attack="fgsm", test_attack="fgsm")
    assert grid.auc("adaboost", 2, "path")["aucs"] == [0.5, 0.5]
    assert any("could not be fitted on the path features" in warning for warning in grid.warnings)
