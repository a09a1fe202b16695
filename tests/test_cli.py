import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from filterscope.cli import main
from filterscope.models import create_model, save_atomically

from conftest import CIFAR_ZIP, RESNET20, RESNET56, require_shared


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_clear_error(code, err, *fragments):
    assert code == 2
    # Progress bars (tqdm, on stderr) may precede the error; the error itself is one line.
    lines = [line for line in err.strip().splitlines() if line.strip() and "|" not in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_image_zip(path: Path, sizes=((8, 8),), classes=("a", "b"), per_class=3, splits=("train", "test")):
    with zipfile.ZipFile(path, "w") as archive:
        for split in splits:
            for class_index, name in enumerate(classes):
                for index in range(per_class):
                    size = sizes[(index + class_index) % len(sizes)]
                    image = Image.fromarray(np.full((*size, 3), 40 * index, dtype=np.uint8))
                    target = path.parent / f"{split}_{name}_{index}.png"
                    image.save(target)
                    archive.write(target, f"set/{split}/{name}/{index}.png")


@pytest.mark.shared
def test_eval_resnet20_reproduces_the_jpeg_test_accuracy(capsys):
    require_shared(CIFAR_ZIP, RESNET20)
    code, out, _ = run_cli("eval", "--model", "resnet20", "--weights", RESNET20, "--data", CIFAR_ZIP,
                           "--split", "test", "--json", capsys=capsys)
    assert code == 0
    result = json.loads(out)
    assert result["accuracy"] == pytest.approx(0.8103, abs=0.001)
    assert len(result["per_class_accuracy"]) == 10
    assert result["classes"][0] == "airplane" and result["classes"][-1] == "truck"
    assert result["num_samples"] == 10_000


@pytest.mark.shared
@pytest.mark.slow
def test_eval_resnet56_reproduces_the_jpeg_test_accuracy(capsys):
    require_shared(CIFAR_ZIP, RESNET56)
    code, out, _ = run_cli("eval", "--model", "resnet56", "--weights", RESNET56, "--data", CIFAR_ZIP, "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out)["accuracy"] == pytest.approx(0.8320, abs=0.001)


def test_eval_on_digits_prints_per_class_accuracy(tmp_path, capsys):
    weights = tmp_path / "digits.pt"
    save_atomically({"state_dict": create_model("digits_cnn", 10).state_dict()}, weights)
    code, out, _ = run_cli("eval", "--model", "digits_cnn", "--weights", weights, "--data", "digits", capsys=capsys)
    assert code == 0
    assert "top-1" in out and len(out.strip().splitlines()) == 11


def test_eval_without_weights_warns_and_draws_the_same_fresh_network_every_time(capsys):
    accuracies = []
    for global_seed in (1, 2):  # whatever the caller's random state, the fresh network is the seeded one
        torch.manual_seed(global_seed)
        with pytest.warns(UserWarning, match="no weights given: evaluating a randomly initialised digits_cnn"):
            code, out, _ = run_cli("eval", "--model", "digits_cnn", "--data", "digits", "--json", capsys=capsys)
        assert code == 0
        accuracies.append(json.loads(out)["accuracy"])
    assert accuracies[0] == accuracies[1]


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_cli("eval", "--model", "digits_cnn", "--weights", tmp_path / "none.pt", "--data", "digits", capsys=capsys)
    assert_one_clear_error(code, err, "does not exist", "--weights")


def test_corrupt_checkpoint(tmp_path, capsys):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage")
    code, _, err = run_cli("eval", "--model", "digits_cnn", "--weights", path, "--data", "digits", capsys=capsys)
    assert_one_clear_error(code, err, "corrupt")


def test_checkpoint_of_another_architecture(capsys):
    require_shared(RESNET20)
    code, _, err = run_cli("eval", "--model", "resnet32", "--weights", RESNET20, "--data", "digits", capsys=capsys)
    # digits are 8×8 grey images: the data check fires before the checkpoint is read.
    assert_one_clear_error(code, err)


def test_checkpoint_with_other_class_count(tmp_path, capsys):
    weights = tmp_path / "five.pt"
    save_atomically({"state_dict": create_model("digits_cnn", 5).state_dict()}, weights)
    code, _, err = run_cli("eval", "--model", "digits_cnn", "--weights", weights, "--data", "digits", capsys=capsys)
    assert_one_clear_error(code, err, "has 5 classes but the data set has 10")


def test_missing_data_path(tmp_path, capsys):
    code, _, err = run_cli("eval", "--model", "resnet20", "--data", tmp_path / "nothing.zip", capsys=capsys)
    assert_one_clear_error(code, err)


def test_malformed_zip(tmp_path, capsys):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    code, _, err = run_cli("eval", "--model", "resnet20", "--data", path, capsys=capsys)
    assert_one_clear_error(code, err)


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("eval", "--model", "resnet20", "--data", tmp_path / "empty", capsys=capsys)
    assert_one_clear_error(code, err)


def test_images_of_unexpected_size(tmp_path, capsys):
    path = tmp_path / "small.zip"
    write_image_zip(path, sizes=((8, 8),))
    code, _, err = run_cli("eval", "--model", "resnet20", "--data", path, capsys=capsys)
    assert_one_clear_error(code, err, "32")


def test_images_of_mixed_sizes(tmp_path, capsys):
    path = tmp_path / "mixed.zip"
    write_image_zip(path, sizes=((32, 32), (30, 32)))
    code, _, err = run_cli("eval", "--model", "resnet20", "--data", path, capsys=capsys)
    assert_one_clear_error(code, err)


def test_device_cuda_without_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli("eval", "--model", "digits_cnn", "--data", "digits", "--device", "cuda", capsys=capsys)
    assert_one_clear_error(code, err, "no CUDA GPU", "--device cpu")


def test_train_with_bad_yaml_and_unknown_option(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    code, _, err = run_cli("train", "--config", bad, capsys=capsys)
    assert_one_clear_error(code, err, "not valid YAML")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epochz: 3\n")
    code, _, err = run_cli("train", "--config", unknown, capsys=capsys)
    assert_one_clear_error(code, err, "epochz")


def test_train_verb_writes_resolved_config_flags_over_yaml(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: digits_cnn\ndata: digits\nepochs: 5\nlr: 0.05\nbatch_size: 64\n")
    run_dir = tmp_path / "run"
    code, out, _ = run_cli("train", "--config", config, "--epochs", "1", "--threads", "1", "--no-progress",
                           "--run-dir", run_dir, capsys=capsys)
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["run_dir"] == str(run_dir)
    import yaml

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["epochs"] == 1 and resolved["lr"] == 0.05 and resolved["batch_size"] == 64


def test_units_verb_lists_resnet20(capsys):
    code, out, _ = run_cli("units", "--model", "resnet20", "--json", capsys=capsys)
    assert code == 0
    costs = json.loads(out)
    assert len(costs["units"]) == 19
    assert costs["total_params"] == 269_722


def test_a_bad_flag_value_is_one_sentence_naming_the_choices_and_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--model", "digits_cnn", "--data", "digits", "--schedule", "per-batch"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "usage:" not in error
    assert "invalid choice: 'per-batch'" in error and "'cosine'" in error and "filterscope train --help" in error
    # the same through --set, which decouple uses for its extensions
    code, _, err = run_cli("decouple", "--model", "digits_cnn", "--data", "digits", "--set", "sparsity_form=per-batch",
                           "--run-dir", tmp_path / "run", capsys=capsys)
    assert_one_clear_error(code, err, "per-batch", "network")


PLUGIN_SOURCE = '''
from torch import nn

from filterscope import register_model


class PluginDigitsNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()

        def unit(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*unit(1, 16), *unit(16, 32), *unit(32, 32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


@register_model("plugin_digits_net", input_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), description="a user's own CNN")
def plugin_digits_net(num_classes):
    return PluginDigitsNet(num_classes)
'''


@pytest.fixture
def plugin_file(tmp_path):
    from filterscope.cli import plugins
    from filterscope.models import MODELS

    path = tmp_path / "my_models.py"
    path.write_text(PLUGIN_SOURCE)
    yield path
    MODELS.pop("plugin_digits_net", None)
    plugins._LOADED.clear()
    sys.modules.pop("filterscope_plugin_my_models", None)


def test_plugin_registers_a_model_for_train_decouple_and_paths(plugin_file, tmp_path, capsys):
    code, out, _ = run_cli("--plugin", plugin_file, "models", capsys=capsys)
    assert code == 0 and "plugin_digits_net" in out and "a user's own CNN" in out
    # the flag may also stand after the verb; loading the same file twice registers once
    common = ["--data", "digits", "--batch-size", "64", "--threads", "1", "--quiet"]
    code, _, err = run_cli("train", "--model", "plugin_digits_net", "--epochs", "3", "--lr", "0.05", *common,
                           "--run-dir", tmp_path / "dense", "--plugin", plugin_file, capsys=capsys)
    assert code == 0, err
    # --config paper: the dataclasses' defaults this test was written for (the CLI's own defaults train for 30 epochs)
    code, out, err = run_cli("--plugin", plugin_file, "decouple", "--config", "paper", "--model", "plugin_digits_net", "--weights",
                             tmp_path / "dense" / "checkpoints" / "last.pt", "--epochs", "2", "--lr", "0.02",
                             "--sparsity-ratio", "0.5", "--set", "recalibrate_bn_images=500", *common,
                             "--run-dir", tmp_path / "decoupled", capsys=capsys)
    assert code == 0, err
    decoupled = json.loads(out.strip().splitlines()[-1])
    code, out, err = run_cli("--plugin", plugin_file, "paths", tmp_path / "decoupled", "--data", "digits", "--json", "--overwrite",
                             capsys=capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["accuracy"] == decoupled["accuracy"]


def test_bad_plugins_are_refused_in_one_sentence(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no GPU here')\n")
    for arguments, fragment in [(["--plugin", tmp_path / "missing.py", "models"], "does not exist"),
                                 (["--plugin", broken, "models"], "RuntimeError: no GPU here"),
                                 (["--plugin", "no_such_module_here", "models"], "not importable"),
                                 (["models", "--plugin"], "needs a value")]:
        code, _, err = run_cli(*arguments, capsys=capsys)
        assert_one_clear_error(code, err, fragment)
    assert "filterscope_plugin_broken" not in sys.modules


def test_every_option_flag_is_explained_from_its_dataclass_docstring(capsys):
    import dataclasses

    from filterscope.core.config import field_descriptions
    from filterscope.methods.decoupling.config import DecoupleConfig
    from filterscope.pipelines.decoupling import DecouplingRunOptions
    from filterscope.training.train import TrainConfig

    for options in (TrainConfig, DecoupleConfig, DecouplingRunOptions):
        descriptions = field_descriptions(options)
        assert [f.name for f in dataclasses.fields(options) if not descriptions.get(f.name)] == []
    described = field_descriptions(DecouplingRunOptions)
    assert described["use_mi"] == described["use_sparsity"] == "switch single loss terms off (the paper's Table 7 ablation)."
    assert field_descriptions(TrainConfig)["compile"].endswith("Evaluation stays eager.")  # continuation lines joined

    with pytest.raises(SystemExit):
        main(["decouple", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--flops-target FLOPS_TARGET a FLOPs reduction (e.g. 2.0) the network is held to" in shown
    assert "peak learning rate of SGD. (default: 0.02)" in shown  # decouple's default: that of its bundled config 'default'
