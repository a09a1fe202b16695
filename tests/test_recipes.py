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
    "resnet20-cifar10-2x-fast": "decouple_resnet20_fast_r0125_050_0875_seed1.json",
    "resnet20-cifar10-2x-skip": "decouple_resnet20_skip_r0_050_1_seed1.json",
}
# What the caller supplies (paths, threads, where the run goes) or what only says how the run was kept.
NOT_IN_RECIPE = {"weights", "data", "teacher_weights", "run_dir", "resume", "threads", "progress", "device", "workers", "seed",
                 "log", "compile"}  # compile: how a process runs, not what it computes (a resumed run takes it from its command)


# Bundled configs that are not the record of one run: the CLI's defaults and the paper's settings.
NOT_MEASURED = {"default", "paper"}
BEST_RECIPE = "resnet20-cifar10-2x"
# What the best recipe sets for its network or its run, left out of the defaults (default.yaml says why).
MODEL_SPECIFIC = {"model", "include", "sparsity_ratio", "flops_target", "distill_weight", "distill_phase", "compile"}


def test_every_recipe_has_its_measured_run():
    assert set(RECIPES) == set(MEASURED_RUN) | NOT_MEASURED
    for name in MEASURED_RUN:
        assert MEASURED_RUN[name] in recipe_path(name).read_text(), "the recipe's comment cites its run"
    assert MEASURED_RUN[BEST_RECIPE] in recipe_path("default").read_text(), "the defaults cite the run they come from"


def cli_configs(*arguments):
    """What `filterscope decouple ARGUMENTS` would run with."""
    from filterscope.cli import build_parser
    from filterscope.cli.training_verbs import decouple_configs

    arguments = [str(argument) for argument in arguments]
    return decouple_configs(build_parser().parse_args(["decouple", "--model", "resnet20", "--data", "digits", *arguments]))


def test_the_cli_defaults_are_the_best_recipes_settings_less_its_networks():
    train_config, decouple_config, options = cli_configs()
    assert (train_config, decouple_config, options) == tuple(cli_configs("--config", "default"))
    assert (decouple_config, options) == fs.load_recipe("default")[1:]
    best = config_values(BEST_RECIPE)
    shared = {name: value for name, value in best.items() if name not in MODEL_SPECIFIC}
    assert MODEL_SPECIFIC <= set(best) and len(shared) == 24  # the schedule and every gate and loss setting but its network's
    resolved = {**vars(train_config), **vars(decouple_config), **vars(options)}
    assert {name: resolved[name] for name in shared} == shared
    # what is left out: gates on every gateable unit but the first and the last, one R (the mean of the recipe's
    # nine, and the ResNet-56 recipe's), no FLOPs target, no distillation, no torch.compile
    assert decouple_config.include == [] and decouple_config.skip_first_and_last
    assert decouple_config.sparsity_ratio == sum(best["sparsity_ratio"]) / 9 == 0.5
    assert decouple_config.sparsity_ratio == config_values("resnet56-cifar10-2x")["sparsity_ratio"]
    assert (options.flops_target, options.distill_weight, train_config.compile) == (0.0, 0.0, False)
    assert (decouple_config.gate_bias_order, decouple_config.detach_gate_input, decouple_config.sparsity_form,
            decouple_config.sparsity_on, decouple_config.gate_lr_scale, decouple_config.lambda_kl, decouple_config.lambda_mi,
            decouple_config.sparsity_ratio_ramp_epochs, decouple_config.path_finetune_epochs, train_config.epochs) == (
        "bn_scale", True, "mean", "evaluation", 3, 0.0, 0.003, 6, 20, 30)
    # default.yaml lists every field of DecoupleConfig, so that it alone says what the defaults are; paper.yaml too
    for name in ("default", "paper"):
        assert set(config_values(name)) >= {f.name for f in dataclasses.fields(fs.DecoupleConfig)}, name


def test_the_cli_help_shows_the_defaults(capsys):
    from filterscope.cli import main

    with pytest.raises(SystemExit):
        main(["decouple", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for flag, value in [("--epochs", "30"), ("--lr", "0.02"), ("--lambda-mi", "0.003"), ("--lambda-kl", "0.0"),
                        ("--lambda-sparsity", "8.0"), ("--sparsity-ratio", "0.5")]:
        help_text = shown.split(f" {flag} {flag[2:].upper().replace('-', '_')} ", 1)[1]
        assert help_text.split("(default: ", 1)[1].startswith(value + ")"), flag
    assert "--config paper gives the paper's" in shown


def test_config_paper_is_the_papers_settings():
    from filterscope.methods.decoupling.config import EXTENSION_FIELDS
    from filterscope.methods.decoupling.presets import PRESETS

    train_config, decouple_config, options = cli_configs("--config", "paper")
    assert (decouple_config, options) == fs.load_recipe("paper")[1:]
    resolved = decouple_config.resolved()
    # Eq. 4 unstandardised, noisy Improved SemHash (Eq. 5-7), L_s of Eq. 11 on the noisy gates with R fixed, KL on,
    # equal starting logits, Table 5's loss weights (ResNet-56 row), no schedule of this project's
    assert (resolved.standardize_gate_input, resolved.gate_noise_std, resolved.semhash_hard_fraction, resolved.gate_bias_init,
            resolved.sparsity_form, resolved.sparsity_on, resolved.gate_bias_order, resolved.detach_gate_input) == (
        False, 1.0, 0.5, 1.0, "paper", "noisy", "uniform", False)
    assert {name: getattr(resolved, name) for name in PRESETS["resnet56"]} == PRESETS["resnet56"]
    assert resolved.lambda_kl == 1.0 and resolved.include == [] and resolved.skip_first_and_last
    assert (resolved.sparsity_warmup_epochs, resolved.sparsity_ratio_ramp_epochs, resolved.path_finetune_epochs,
            resolved.gate_lr_scale) == (0, 0, 0, 1)
    # = DecoupleConfig()'s defaults (what the CLI used before) but for the unstandardised gate input
    assert resolved == fs.DecoupleConfig(standardize_gate_input=False).resolved()
    assert [name for name in EXTENSION_FIELDS if getattr(resolved, name) != getattr(fs.DecoupleConfig(), name)] == [
        "standardize_gate_input"]
    assert train_config == fs.TrainConfig(model="resnet20", data="digits") and options == fs.DecouplingRunOptions()


def test_a_preset_named_over_a_bundled_config_takes_its_loss_weights():
    from filterscope.methods.decoupling.presets import PRESETS

    for arguments in (["--preset", "vggnet"], ["--set", "preset=vggnet"], ["--config", "paper", "--preset", "vggnet"]):
        resolved = cli_configs(*arguments)[1].resolved()
        assert {name: getattr(resolved, name) for name in PRESETS["vggnet"]} == PRESETS["vggnet"], arguments
    resolved = cli_configs("--preset", "vggnet", "--lambda-mi", "0.5")[1].resolved()
    assert (resolved.lambda_mi, resolved.lambda_sparsity) == (0.5, PRESETS["vggnet"]["lambda_sparsity"])  # a value given wins
    resolved = fs.load_recipe("default", preset="googlenet")[1].resolved()
    assert {name: getattr(resolved, name) for name in PRESETS["googlenet"]} == PRESETS["googlenet"]
    assert fs.load_recipe("default", preset="googlenet", sparsity_ratio=0.3)[1].resolved().sparsity_ratio == 0.3


def test_config_files_layer_and_a_file_of_your_own_starts_from_the_dataclasses(tmp_path):
    (tmp_path / "mine.yaml").write_text("decouple:\n  lambda_sparsity: 4.0\n")
    mine = cli_configs("--config", tmp_path / "mine.yaml")[1]
    assert mine == fs.DecoupleConfig(lambda_sparsity=4.0)  # as before the defaults moved: a recorded file means what it meant
    over_defaults = cli_configs("--config", "default", "--config", tmp_path / "mine.yaml")[1]
    assert over_defaults == dataclasses.replace(cli_configs()[1], lambda_sparsity=4.0)


def test_a_resumed_run_goes_on_with_the_settings_it_recorded(tmp_path):
    """A run begun before the defaults were the bundled config recorded the dataclasses' defaults; resumed
    without --config it keeps them (and an option it did not record yet is the dataclass default it ran as)."""
    import yaml

    run = tmp_path / "old_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # only its presence matters here
    old = fs.DecoupleConfig(lambda_sparsity=5.0, sparsity_ratio=0.5, include=["features.*"]).resolved()
    recorded = {k: v for k, v in dataclasses.asdict(old).items() if k not in ("detach_gate_input", "path_finetune_epochs")}
    (run / "decouple.yaml").write_text(yaml.safe_dump({"decouple": {**recorded, "kl_epsilon": 1e-6},
                                                       "options": {**dataclasses.asdict(fs.DecouplingRunOptions()), "use_kl": False}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"verb": "decouple", **dataclasses.asdict(
        fs.TrainConfig(model="resnet20", epochs=12, threads=7, run_dir="moved/elsewhere"))}))
    train_config, decouple_config, options = cli_configs("--run-dir", run, "--resume", "--lambda-mi", "0.02")
    assert decouple_config == dataclasses.replace(old, lambda_kl=0.0, lambda_mi=0.02)  # use_kl false is λk 0; flags win
    assert (train_config.epochs, train_config.lr) == (12, 0.1) and options == fs.DecouplingRunOptions()
    # where the run is and how this process runs it come from the command line, as for a new run
    assert (train_config.run_dir, train_config.threads, train_config.resume) == (str(run), None, True)
    # a new run in the same place, or a resume with --config, starts from the config
    assert cli_configs("--run-dir", run, "--overwrite")[1] == cli_configs()[1]
    assert cli_configs("--run-dir", run, "--resume", "--config", "default")[1] == cli_configs()[1]


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


def test_resuming_a_run_begun_under_other_defaults_keeps_its_settings(tmp_path, capsys):
    """End to end on digits: a run begun with the dataclasses' defaults (what `decouple` used before the
    bundled 'default', here `--config paper`) is resumed without --config and goes on with what it recorded."""
    import warnings

    import yaml

    run = tmp_path / "run"
    common = ["--model", "digits_cnn", "--data", "digits", "--batch-size", "64", "--threads", "1", "--quiet",
              "--set", "max_steps_per_epoch=3", "--set", "recalibrate_bn_images=200", "--set", "save_paths=false",
              "--run-dir", run]
    code, _, err = run_cli("decouple", "--config", "paper", "--epochs", "1", *common, capsys=capsys)
    assert code == 0, err
    recorded = yaml.safe_load((run / "decouple.yaml").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli("decouple", "--epochs", "2", "--resume", *common, capsys=capsys)
    assert code == 0, err
    changed = [str(w.message) for w in caught if "settings changed" in str(w.message)]
    assert len(changed) == 1 and "epochs: 1 -> 2" in changed[0] and "decouple.yaml" not in changed[0], changed
    assert yaml.safe_load((run / "decouple.yaml").read_text()) == recorded
    assert recorded["decouple"]["sparsity_form"] == "paper" and recorded["decouple"]["gate_noise_std"] == 1.0
