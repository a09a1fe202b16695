"""The bundled decoupling recipes are the settings of the runs their comments cite."""

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

import filterscope as fs
from filterscope.methods.decoupling.objective import layer_ratios_for
from filterscope.core.config import resolve_configs
from filterscope.methods.decoupling.legacy import upgrade_settings
from filterscope.pipelines.recipes import RECIPES, config_values, recipe_path

from test_cli import assert_one_clear_error, run_cli

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "decoupling" / "results"
# The measured run each recipe reproduces (its JSON records the settings it ran with).
MEASURED_RUN = {
    "resnet20-cifar10-2x": "decouple_resnet20_ls_mi_conv1_r025_050_075_ramp6_bnbias_detach_pf20_lm0003_flops201_30ep_pfkd10.json",
    "resnet56-cifar10-2x": "decouple_resnet56_ls_mi_conv1_r050_ramp10_bnbias_detach_pf10_lm003_flops2_30ep_pfkd.json",
}
# What the caller supplies (paths, threads, where the run goes) or what only says how the run was kept.
NOT_IN_RECIPE = {"weights", "data", "teacher_weights", "run_dir", "resume", "threads", "progress", "device", "workers", "seed"}


def test_every_recipe_has_its_measured_run():
    assert set(RECIPES) == set(MEASURED_RUN)
    for name in RECIPES:
        assert MEASURED_RUN[name] in recipe_path(name).read_text(), "the recipe's comment cites its run"


@pytest.mark.parametrize("name", sorted(MEASURED_RUN))
def test_recipe_settings_equal_the_measured_run(name):
    """Every setting the measured run recorded, under today's names (upgrade_settings: use_kl false is
    λk 0; the options that are gone had the one value today's code computes, or this would raise)."""
    measured = json.loads((RESULTS / MEASURED_RUN[name]).read_text())
    train_config, decouple_config, options = fs.load_recipe(name)
    recorded_options = {k: v for k, v in measured["options"].items() if k not in NOT_IN_RECIPE}
    recorded = upgrade_settings({**measured["decouple_config"], **recorded_options})
    decouple_names = {f.name for f in dataclasses.fields(decouple_config)}
    option_names = {f.name for f in dataclasses.fields(options)}
    assert set(recorded) <= decouple_names | option_names  # nothing recorded is left unaccounted for
    assert vars(decouple_config) == {k: v for k, v in recorded.items() if k in decouple_names}
    assert {k: getattr(options, k) for k in recorded if k in option_names} == {k: v for k, v in recorded.items() if k in option_names}
    assert measured["options"]["use_kl"] is False and decouple_config.lambda_kl == 0.0  # the KL term off, as measured
    recorded_train = {k: v for k, v in measured["train_config"].items() if k not in NOT_IN_RECIPE}
    assert {k: getattr(train_config, k) for k in recorded_train} == recorded_train


def test_a_config_file_with_the_old_option_names_gives_the_same_settings(tmp_path):
    new = fs.load_recipe("resnet20-cifar10-2x")
    text = recipe_path("resnet20-cifar10-2x").read_text()
    old_text = text.replace("  lambda_kl: 0.0", "  lambda_kl: 1.0").replace(
        "options:\n", "options:\n  use_kl: false\n").replace(
        "decouple:\n", "decouple:\n  kl_epsilon: 1.0e-6\n  kl_detach_response: true\n  mi_classifier_full_rate: true\n")
    assert old_text != text
    (tmp_path / "old.yaml").write_text(old_text)
    assert config_values(tmp_path / "old.yaml") == config_values("resnet20-cifar10-2x")
    assert tuple(resolve_configs((fs.TrainConfig, fs.DecoupleConfig, fs.DecouplingRunOptions), argparse.Namespace(),
                                 config_values(tmp_path / "old.yaml"))) == new
    (tmp_path / "changed.yaml").write_text(old_text.replace("mi_classifier_full_rate: true", "mi_classifier_full_rate: false"))
    with pytest.raises(fs.UserInputError, match="mi_classifier_full_rate=False, which this version no longer offers"):
        config_values(tmp_path / "changed.yaml")


def test_recipe_gates_the_blocks_first_convs_with_per_stage_ratios():
    train_config, decouple_config, _ = fs.load_recipe("resnet20-cifar10-2x", weights="ignored.th")
    assert train_config.weights == "ignored.th"  # overrides win, as flags do
    model = fs.decouple(fs.create_model(train_config.model, num_classes=10), decouple_config, num_classes=10)
    assert list(model.gated_units) == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert layer_ratios_for(model) == [0.25] * 3 + [0.5] * 3 + [0.75] * 3


def test_unknown_recipe_or_missing_config_file_is_one_clear_error(capsys):
    code, _, err = run_cli("decouple", "--config", "resnet21-cifar10-2x", capsys=capsys)
    assert_one_clear_error(code, err, "neither a file nor a bundled recipe", "resnet20-cifar10-2x")
    with pytest.raises(fs.UserInputError, match="resnet56-cifar10-2x"):
        fs.load_recipe("no-such-recipe")
