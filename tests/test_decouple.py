import copy
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from filterscope.methods.decoupling.paths import PathRecord, collect_paths, filter_states
from filterscope.methods.decoupling import (
    ControllingModule,
    DecoupleConfig,
    DecouplingObjective,
    decouple,
    load_decoupled,
    save_decoupled,
    saturating_sigmoid,
    semhash,
)
from filterscope.methods.decoupling.losses import kl_gate_response, network_sparsity_loss, sparsity_loss, to_distribution
from filterscope.core.flops import count_flops_reference
from filterscope.core.hooks import Hooks
from filterscope.data import load_dataset
from filterscope.core.errors import UserInputError
from filterscope.models import create_model, model_spec
from filterscope.training.train import cxx_compiler_available

import toy_models
from conftest import run_torchrun


# --- Improved SemHash -------------------------------------------------------------------------

def test_saturating_sigmoid_values_and_flat_region():
    x = torch.tensor([-10.0, 0.0, 10.0, 2.3, 2.5], requires_grad=True)
    y = saturating_sigmoid(x)
    assert y[0] == 0 and y[2] == 1
    assert y[1].item() == pytest.approx(0.5)
    y.sum().backward()
    assert x.grad[3] > 0 and x.grad[4] == 0  # flat beyond ln(11) ≈ 2.398


def test_semhash_evaluation_is_hard_threshold_without_noise():
    logits = torch.tensor([[-0.1, 0.1, 3.0], [0.0, -2.0, 0.5]])
    assert torch.equal(semhash(logits, training=False), torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]))


def test_semhash_mixes_hard_and_soft_per_sample_not_per_channel():
    torch.manual_seed(0)
    logits = torch.zeros(64, 200, requires_grad=True)
    gates = semhash(logits, training=True)
    binary_rows = ((gates == 0) | (gates == 1)).all(dim=1)
    soft_rows = ((gates > 0) & (gates < 1)).float().mean(dim=1) > 0.5
    assert int(binary_rows.sum()) == 32  # exactly half of the samples are hard ...
    assert bool((binary_rows ^ soft_rows).all())  # ... and every other sample is soft
    # Straight-through: hard rows carry v1's gradient, which is non-zero near 0.
    gates.sum().backward()
    assert (logits.grad[binary_rows].abs().sum(1) > 0).all()


def test_semhash_is_repeatable_under_the_seed():
    logits = torch.randn(8, 16)
    torch.manual_seed(5)
    first = semhash(logits, training=True)
    torch.manual_seed(5)
    assert torch.equal(first, semhash(logits, training=True))


# --- losses -----------------------------------------------------------------------------------

def test_kl_direction_is_gates_given_response():
    torch.manual_seed(0)
    z, y = torch.rand(4, 10), torch.rand(4, 10)
    p, q = to_distribution(z, 1e-6), to_distribution(y, 1e-6)
    ours = kl_gate_response(z, y, 1e-6)
    # F.kl_div(log q, p) = Σ p (log p − log q) = KL(p ‖ q) = KL(z ‖ y).
    assert ours.item() == pytest.approx(F.kl_div(q.log(), p, reduction="batchmean").item(), rel=1e-5)
    reverse = F.kl_div(p.log(), q, reduction="batchmean").item()
    assert abs(ours.item() - reverse) > 1e-3


def test_kl_pushes_open_gates_of_silent_filters_shut():
    z = torch.ones(1, 4, requires_grad=True)
    response = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    kl_gate_response(z, response, 1e-6).backward()
    assert z.grad[0, 3] > 0 and z.grad[0, 3] > z.grad[0, 0]


def test_sparsity_loss_is_distance_to_target_not_plain_l1():
    closed = torch.zeros(2, 10, requires_grad=True)
    loss = sparsity_loss(closed, ratio=0.5, form="paper")
    assert loss.item() == pytest.approx(5.0)  # | 0 − 0.5·10 |
    loss.backward()
    assert (closed.grad < 0).all()  # below target: pushes gates open (plain L1 would push them shut)
    opened = torch.ones(2, 10, requires_grad=True)
    sparsity_loss(opened, ratio=0.5, form="paper").backward()
    assert (opened.grad > 0).all()
    assert sparsity_loss(torch.full((3, 8), 0.25), ratio=0.5, form="mean").item() == pytest.approx(0.25)
    assert sparsity_loss(torch.ones(3, 8), ratio=0.0, form="paper").item() == pytest.approx(8.0)


def test_batch_sparsity_budget_holds_on_average_not_per_input():
    uneven = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # one input all on, one all off
    assert sparsity_loss(uneven, ratio=0.5, form="batch").item() == pytest.approx(0.0)
    assert sparsity_loss(uneven, ratio=0.5, form="mean").item() == pytest.approx(0.5)
    gates = torch.full((2, 4), 0.75, requires_grad=True)
    sparsity_loss(gates, ratio=0.5, form="batch").backward()
    assert torch.allclose(gates.grad, torch.full((2, 4), 1 / 8))
    with pytest.raises(UserInputError, match="sparsity form"):
        DecoupleConfig(sparsity_form="per-batch").resolved()


def test_network_sparsity_budget_lets_an_input_trade_filters_between_layers_at_equal_flops():
    flops = [1.0, 3.0]  # layer 1's gates control three times the FLOPs of layer 0's
    # input 0 spends more in the cheap layer and less in the dear one, input 1 the reverse: both on budget
    cheap_open = [torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.tensor([[1 / 3, 1 / 3], [2 / 3, 2 / 3]])]
    assert network_sparsity_loss(cheap_open, [0.5, 0.5], flops).item() == pytest.approx(0.0, abs=1e-6)
    assert sum(sparsity_loss(z, 0.5, "mean") for z in cheap_open).item() > 0.6  # per layer, both are off target
    gates = [torch.ones(1, 4, requires_grad=True), torch.ones(1, 2, requires_grad=True)]
    loss = network_sparsity_loss(gates, [0.5, 0.5], flops)
    assert loss.item() == pytest.approx((0.5 * 0.5 + 1.5 * 0.5))  # weights scaled to average 1: 0.5 and 1.5
    loss.backward()
    assert torch.allclose(gates[0].grad, torch.full((1, 4), 0.5 / 4)) and torch.allclose(gates[1].grad, torch.full((1, 2), 1.5 / 2))
    # equal weights: each gate is pushed as hard as by the per-layer "mean" form
    equal = [torch.ones(1, 4, requires_grad=True), torch.ones(1, 2, requires_grad=True)]
    network_sparsity_loss(equal, [0.5, 0.5], [7.0, 7.0]).backward()
    per_layer = [torch.ones(1, 4, requires_grad=True), torch.ones(1, 2, requires_grad=True)]
    sum(sparsity_loss(z, 0.5, "mean") for z in per_layer).backward()
    assert all(torch.allclose(a.grad, b.grad) for a, b in zip(equal, per_layer))


# --- decouple(model) --------------------------------------------------------------------------

def digits_decoupled(**config):
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10)
    return model, decouple(model, DecoupleConfig(**config), num_classes=10, input_shape=(1, 8, 8), model_name="digits_cnn")


def test_decouple_copies_and_gates_all_but_first_and_last():
    model, decoupled = digits_decoupled()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert decoupled.gated_units == ["features.3", "features.7"]
    assert all(type(m) in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Sequential, nn.AdaptiveAvgPool2d, nn.Linear)
               or m is model for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_step_zero_outputs_equal_the_original():
    model, decoupled = digits_decoupled(gate_bias_init=1.0)
    x = torch.randn(16, 1, 8, 8)
    model.eval(), decoupled.eval()
    assert torch.allclose(model(x), decoupled(x), atol=1e-6)
    assert all(bool((z == 1).all()) for z in decoupled.last_gates())


def test_step_zero_accuracy_equals_original_on_resnet20():
    from torch.utils.data import DataLoader, TensorDataset

    from filterscope.analyses.evaluate import evaluate

    torch.manual_seed(0)
    model = create_model("resnet20", 10)
    decoupled = decouple(model, DecoupleConfig(preset="auto"), num_classes=10, model_name="resnet20")
    loader = DataLoader(TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))), batch_size=32)
    original = evaluate(model, loader, 10, progress=False)
    gated = evaluate(decoupled, loader, 10, progress=False)
    assert gated.accuracy == original.accuracy
    assert gated.loss == pytest.approx(original.loss, rel=1e-5)
    assert len(decoupled.gated_units) == 17  # 19 units minus the stem and the last conv


def test_non_gateable_units_are_skipped_with_a_warning_naming_them():
    model = toy_models.mobilenet_like()
    with pytest.warns(UserWarning, match=r"unit 'features\.1\.0' cannot be gated \(.*group"):
        decoupled = decouple(model, DecoupleConfig(), num_classes=10)
    assert decoupled.gated_units == ["features.2.0"]  # depthwise features.1.0 and features.3.0 are skipped


def test_preset_auto_for_unknown_architecture_falls_back_and_says_so():
    with pytest.warns(UserWarning, match="no decoupling preset"):
        config = DecoupleConfig(preset="auto").resolved("my_net")
    assert config.lambda_sparsity == 0.00015 and config.lambda_kl == 1.0
    assert DecoupleConfig(preset="vggnet", lambda_mi=0.5).resolved().lambda_mi == 0.5  # override wins
    with pytest.raises(UserInputError, match="unknown decoupling preset"):
        DecoupleConfig(preset="nope").resolved()


def test_vgg16_preset_ratios_follow_conv_positions():
    from filterscope.methods.decoupling.objective import layer_ratios_for

    decoupled = decouple(toy_models.vgg16_bn_like(), DecoupleConfig(preset="vgg16"), num_classes=10)
    ratios = layer_ratios_for(decoupled)
    assert len(ratios) == 11 and ratios[:9] == [0.5] * 9 and ratios[9:] == [0.8, 0.8]


def test_save_and_load_without_the_code_that_built_it(tmp_path):
    _, decoupled = digits_decoupled(lambda_sparsity=0.5)
    with torch.no_grad():
        for module in decoupled.gate_modules():
            module.controller.expand.weight.normal_()
    decoupled.eval()
    x = torch.randn(8, 1, 8, 8)
    expected = decoupled(x)
    path = save_decoupled(decoupled, tmp_path / "d.pt")
    loaded = load_decoupled(path)
    assert loaded.config.lambda_sparsity == 0.5
    assert torch.equal(loaded(x), expected)


def test_objective_terms_and_gate_gradients():
    _, decoupled = digits_decoupled(lambda_sparsity=0.1, sparsity_ratio=0.5)
    decoupled.train()
    objective = DecouplingObjective(decoupled, steps_per_epoch=10)
    loss, logits, terms = objective(decoupled, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)), 0)
    assert set(terms) >= {"ce", "mi", "kl", "sparsity"}
    loss.backward()
    assert all(m.controller.expand.bias.grad is not None for m in decoupled.gate_modules())
    assert all(c.weight.grad is not None for c in decoupled.mi_classifiers)


@pytest.mark.parametrize("weights", [(0.01, 1.0, 0.1), (0.5, 0.25, 3.0)])
def test_objective_weights_each_term_by_its_lambda(weights):
    """L = CE + λm·L_mi + (W_cla's own CE) + λk·L_kl + λs·L_s, from the terms it returns (Eq. 12)."""
    lambda_mi, lambda_kl, lambda_sparsity = weights
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    _, reference = digits_decoupled(lambda_mi=1.0, lambda_kl=1.0, lambda_sparsity=1.0, sparsity_ratio=0.5)
    _, decoupled = digits_decoupled(lambda_mi=lambda_mi, lambda_kl=lambda_kl, lambda_sparsity=lambda_sparsity, sparsity_ratio=0.5)
    results = []
    for model in (reference, decoupled):
        with torch.no_grad():  # gates that depend on the input, as after some training
            for module in model.gate_modules():
                module.controller.expand.weight.copy_(torch.linspace(-1, 1, module.controller.expand.weight.numel())
                                                      .reshape(module.controller.expand.weight.shape))
        model.train()
        torch.manual_seed(3)  # the same SemHash noise for both
        results.append(DecouplingObjective(model, steps_per_epoch=10)(model, images, labels, 0))
    (_, _, unit_terms), (loss, _, terms) = results
    for name in ("ce", "mi", "mi_classifier", "kl", "sparsity"):  # the terms do not depend on the weights ...
        assert terms[name].item() == pytest.approx(unit_terms[name].item(), rel=1e-6), name
    expected = (terms["ce"] + lambda_mi * terms["mi"] + terms["mi_classifier"] + lambda_kl * terms["kl"]
                + lambda_sparsity * terms["sparsity"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # ... and each enters the loss times its λ
    assert terms["mi"].item() > 0 and terms["kl"].item() > 0 and terms["sparsity"].item() > 0


def test_lambda_kl_zero_leaves_the_kl_term_out_and_measures_no_responses():
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    _, decoupled = digits_decoupled(lambda_kl=0.0, lambda_sparsity=0.1, sparsity_ratio=0.5)
    decoupled.train()
    loss, _, terms = DecouplingObjective(decoupled, steps_per_epoch=10)(decoupled, images, labels, 0)
    assert "kl" not in terms and all(slot.response is None for slot in decoupled.slots)
    expected = terms["ce"] + decoupled.config.lambda_mi * terms["mi"] + terms["mi_classifier"] + 0.1 * terms["sparsity"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sparsity_warmup_raises_lambda_s_linearly_then_holds_it():
    _, decoupled = digits_decoupled(lambda_sparsity=2.0, sparsity_ratio=0.5, sparsity_warmup_epochs=2)
    objective = DecouplingObjective(decoupled, steps_per_epoch=10)
    assert [objective.sparsity_weight(step) for step in (0, 9, 19, 500)] == pytest.approx([2.0 / 20, 1.0, 2.0, 2.0])
    _, without = digits_decoupled(lambda_sparsity=2.0, sparsity_ratio=0.5)
    assert DecouplingObjective(without, steps_per_epoch=10).sparsity_weight(0) == 2.0  # the paper: λs from the first step
    decoupled.train()
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss, _, terms = objective(decoupled, images, labels, 4)  # half way up the ramp of step 5 of 20
    expected = (terms["ce"] + decoupled.config.lambda_mi * terms["mi"] + terms["mi_classifier"] + terms["kl"]
                + 2.0 * 5 / 20 * terms["sparsity"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sparsity_on_evaluation_counts_the_hard_noise_free_gates():
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    measured = {}
    for sparsity_on in ("noisy", "evaluation"):
        _, decoupled = digits_decoupled(lambda_sparsity=1.0, sparsity_ratio=0.0, sparsity_form="mean", gate_bias_init=0.3,
                                        sparsity_on=sparsity_on)
        decoupled.train()
        torch.manual_seed(0)
        _, _, terms = DecouplingObjective(decoupled, steps_per_epoch=10)(decoupled, images, labels, 0)
        noisy = sum(z.mean() for z in decoupled.last_gates())
        measured[sparsity_on] = (terms["sparsity"].item(), noisy.item())
    # all logits start at b = 0.3 > 0: every evaluation gate is on, |1 − 0| per layer; the noisy gates are not all on
    assert measured["evaluation"][0] == pytest.approx(2.0)
    assert measured["noisy"][0] == pytest.approx(measured["noisy"][1], rel=1e-6) and measured["noisy"][0] < 1.9


def test_gate_input_standardisation_centres_the_pooled_input_and_can_be_left_out():
    torch.manual_seed(0)
    x = torch.rand(32, 4, 5, 5) * 3 + 2  # post-ReLU-like: positive, far from 0 on average
    pooled = x.mean(dim=(2, 3))
    for standardize in (True, False):
        controller = ControllingModule(4, 6, reduction=2, standardize_input=standardize).train()
        seen = {}
        with Hooks() as hooks:
            hooks.forward(controller.squeeze, lambda module, inputs, output: seen.update(s=inputs[0]))
            controller(x)
        if standardize:
            assert torch.allclose(seen["s"].mean(0), torch.zeros(4), atol=1e-5)
            assert torch.allclose(seen["s"].var(0, unbiased=False), torch.ones(4), atol=1e-3)
        else:
            assert torch.equal(seen["s"], pooled)  # the paper: W1 reads GAP(X) as it is
    _, plain = digits_decoupled(standardize_gate_input=False)
    assert all(isinstance(m.controller.standardize, nn.Identity) for m in plain.gate_modules())
    _, standardised = digits_decoupled()
    assert all(isinstance(m.controller.standardize, nn.BatchNorm1d) for m in standardised.gate_modules())


def test_skip_first_and_last_false_gates_every_unit():
    decoupled = decouple(Chain(), DecoupleConfig(skip_first_and_last=False), num_classes=3, input_shape=(3, 16, 16))
    assert decoupled.gated_units == ["c1", "c2", "c3", "c4"]
    assert decouple(Chain(), DecoupleConfig(), num_classes=3, input_shape=(3, 16, 16)).gated_units == ["c2", "c3"]
    with pytest.raises(UserInputError, match="skip_first_and_last=False"):
        decouple(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)),
                 DecoupleConfig(), num_classes=3, input_shape=(3, 16, 16))


def test_gate_lr_scale_sets_the_rate_of_the_gates_and_classifiers():
    from filterscope.pipelines.decoupling import gate_param_groups
    from filterscope.training.train import TrainConfig

    _, decoupled = digits_decoupled(gate_lr_scale=3.0)
    network, gates = gate_param_groups(decoupled, TrainConfig(lr=0.02), decoupled.config)
    assert network["lr"] == 0.02 and gates["lr"] == pytest.approx(0.06)
    assert {id(p) for p in gates["params"]} == {id(p) for p in decoupled.gate_parameters()}
    assert len(network["params"]) + len(gates["params"]) == len(list(decoupled.parameters()))
    _, default = digits_decoupled()
    assert [group["lr"] for group in gate_param_groups(default, TrainConfig(lr=0.02), default.config)] == [0.02, 0.02]


def test_every_option_is_the_papers_or_a_documented_extension():
    import dataclasses
    from pathlib import Path

    from filterscope.methods.decoupling.config import EXTENSION_FIELDS, PAPER_FIELDS

    names = [f.name for f in dataclasses.fields(DecoupleConfig)]
    assert sorted(PAPER_FIELDS + EXTENSION_FIELDS) == sorted(names) and not set(PAPER_FIELDS) & set(EXTENSION_FIELDS)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "decoupling-options.md").read_text()
    from filterscope.pipelines.decoupling import DecouplingRunOptions

    for name in names + [f.name for f in dataclasses.fields(DecouplingRunOptions)]:
        assert f"`{name}`" in docs, name


def test_old_option_names_translate_or_are_refused_in_one_sentence(tmp_path):
    from filterscope.methods.decoupling.legacy import upgrade_settings

    old = {"lambda_kl": 1.0, "kl_epsilon": 1e-6, "kl_detach_response": True, "mi_classifier_full_rate": True,
           "use_kl": False, "use_mi": True}
    assert upgrade_settings(old) == {"lambda_kl": 0.0, "use_mi": True}
    assert upgrade_settings({"lambda_kl": 0.5, "use_kl": True}) == {"lambda_kl": 0.5}
    for name, value in (("kl_epsilon", 0.01), ("kl_detach_response", False), ("mi_classifier_full_rate", False)):
        with pytest.raises(UserInputError, match=f"{name}={value!r}, which this version no longer offers"):
            upgrade_settings({name: value}, source="the file")
    # a checkpoint written with an option the code no longer computes is refused, not loaded in silence
    _, decoupled = digits_decoupled()
    path = save_decoupled(decoupled, tmp_path / "d.pt", extra={})
    payload = torch.load(path, weights_only=False)
    payload["decouple_config"]["kl_detach_response"] = False
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(UserInputError, match="kl_detach_response=False"):
        load_decoupled(tmp_path / "old.pt")


def test_checkpoint_holds_the_model_not_its_training_schedule(tmp_path):
    _, decoupled = digits_decoupled(lambda_sparsity=0.5, sparsity_ratio_ramp_epochs=3, path_finetune_epochs=2, gate_lr_scale=4.0)
    payload = torch.load(save_decoupled(decoupled, tmp_path / "d.pt"), weights_only=False)
    assert {"format", "base_model", "num_classes", "input_shape", "decouple_config", "state_dict"} <= set(payload)
    assert not {"sparsity_warmup_epochs", "sparsity_ratio_ramp_epochs", "path_finetune_epochs", "gate_lr_scale"} & set(
        payload["decouple_config"])
    assert not {"optimizer", "history", "epoch"} & set(payload)
    loaded = load_decoupled(tmp_path / "d.pt")
    assert loaded.config.lambda_sparsity == 0.5 and loaded.gated_units == decoupled.gated_units
    assert loaded.all_unit_names == decoupled.all_unit_names and loaded.gated_unit_indices == [1, 2]


def test_evaluation_folds_batchnorm_and_gates_into_one_pass_with_the_same_values():
    from filterscope.methods.decoupling.gate import GatedOutput, GateSlot

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(-1, 1), bn.bias.uniform_(-1, 1)
    slot = GateSlot()
    slot.gates = (torch.rand(4, 6) > 0.5).float()
    gated = GatedOutput(bn, nn.ReLU(), slot).eval()
    x = torch.randn(4, 6, 5, 5)
    assert torch.allclose(gated(x), bn.eval()(x) * slot.gates[:, :, None, None], atol=1e-6)


def test_responses_are_measured_only_when_the_kl_term_needs_them():
    _, decoupled = digits_decoupled()
    decoupled.train()
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    _, without_kl = digits_decoupled(lambda_kl=0.0)
    without_kl.train()
    DecouplingObjective(without_kl, steps_per_epoch=10)(without_kl, images, labels, 0)
    assert all(slot.response is None for slot in without_kl.slots)
    _, _, terms = DecouplingObjective(decoupled, steps_per_epoch=10)(decoupled, images, labels, 0)
    assert "kl" in terms and all(slot.response is not None and not slot.response.requires_grad for slot in decoupled.slots)


def test_sparsity_target_ramps_from_all_on_to_r_along_the_cubic_schedule():
    _, decoupled = digits_decoupled(lambda_sparsity=1.0, sparsity_ratio=0.4, sparsity_ratio_ramp_epochs=2)
    objective = DecouplingObjective(decoupled, steps_per_epoch=10)
    assert objective.ratios_at(0)[0] == pytest.approx(0.4 + 0.6 * (19 / 20) ** 3)
    assert objective.ratios_at(9)[0] == pytest.approx(0.4 + 0.6 * 0.5 ** 3)
    assert objective.ratios_at(19) == objective.ratios_at(500) == [0.4, 0.4]
    _, fixed = digits_decoupled(lambda_sparsity=1.0, sparsity_ratio=0.4)
    assert DecouplingObjective(fixed, steps_per_epoch=10).ratios_at(0) == [0.4, 0.4]


def test_distillation_term_from_a_frozen_copy_of_the_teacher():
    model, decoupled = digits_decoupled()
    decoupled.train()
    model.train()
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    objective = DecouplingObjective(decoupled, steps_per_epoch=10, teacher=model, distill_weight=0.5, distill_temperature=2.0)
    loss, logits, terms = objective(decoupled, images, labels, 0)
    with torch.no_grad():
        expected = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(objective.teacher.network(images) / 2, 1),
                            reduction="batchmean") * 4
    assert terms["distill"].item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in objective.teacher.network.parameters())
    assert not objective.teacher.network.training
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())  # caller's, untouched
    assert "distill" not in DecouplingObjective(decoupled, steps_per_epoch=10)(decoupled, images, labels, 0)[2]


def test_distillation_limited_to_path_finetune_starts_with_the_frozen_paths():
    model, decoupled = digits_decoupled(lambda_sparsity=1.0, sparsity_ratio=0.5, path_finetune_epochs=1)
    decoupled.train()
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    objective = DecouplingObjective(decoupled, steps_per_epoch=10, total_epochs=3, teacher=model, distill_weight=0.5,
                                    distill_phase="path_finetune")
    torch.manual_seed(0)  # the same SemHash noise for both objectives
    loss, _, terms = objective(decoupled, images, labels, 19)  # the last step before path fine-tuning
    assert "distill" not in terms and not decoupled.frozen_paths
    torch.manual_seed(0)
    without_teacher, _, _ = DecouplingObjective(decoupled, steps_per_epoch=10, total_epochs=3)(decoupled, images, labels, 19)
    assert loss.item() == without_teacher.item()
    loss, logits, terms = objective(decoupled, images, labels, 20)  # path fine-tuning: the teacher's term joins
    assert decoupled.frozen_paths and set(terms) == {"ce", "distill", "gates_mean"}
    assert loss.item() == pytest.approx((terms["ce"] + 0.5 * terms["distill"]).item(), rel=1e-6)
    always = DecouplingObjective(decoupled, steps_per_epoch=10, total_epochs=3, teacher=model, distill_weight=0.5)
    assert "distill" in always(decoupled, images, labels, 0)[2]


def test_path_finetune_trains_the_network_through_frozen_evaluation_gates():
    _, decoupled = digits_decoupled(lambda_sparsity=1.0, sparsity_ratio=0.5, path_finetune_epochs=1)
    with torch.no_grad():  # an input-dependent gate pattern, some filters off
        for module in decoupled.gate_modules():
            module.controller.expand.weight.normal_(0, 2.0)
            module.controller.expand.bias.normal_(0, 1.0)
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    objective = DecouplingObjective(decoupled, steps_per_epoch=10, total_epochs=3)
    decoupled.train()
    _, _, terms = objective(decoupled, images, labels, 19)  # epoch 2 of 3: gates still learn
    assert {"mi", "kl", "sparsity"} <= set(terms) and not decoupled.frozen_paths
    decoupled.eval()
    decoupled(images)
    evaluation_gates = [z.clone() for z in decoupled.last_gates()]
    assert 0 < torch.cat(evaluation_gates, 1).mean() < 1
    decoupled.train()
    for module in decoupled.network.modules():  # the features as evaluation computes them, gates in training mode
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    decoupled.zero_grad()
    loss, _, terms = objective(decoupled, images, labels, 20)  # the last epoch: frozen paths
    assert decoupled.frozen_paths and set(terms) == {"ce", "gates_mean"}
    for z, expected in zip(decoupled.last_gates(), evaluation_gates):  # training mode, yet evaluation's gates
        assert torch.equal(z, expected)
    loss.backward()
    assert all(p.grad is None for p in decoupled.gate_parameters())
    assert decoupled.network.features[0].weight.grad is not None
    objective(decoupled, images, labels, 5)  # a step before the phase (resume) lets the gates learn again
    assert not decoupled.frozen_paths


def test_path_finetune_needs_the_run_length():
    _, decoupled = digits_decoupled(path_finetune_epochs=1)
    with pytest.raises(ValueError, match="total_epochs"):
        DecouplingObjective(decoupled, steps_per_epoch=10)


def test_bn_scale_bias_order_closes_least_important_filters_first_and_starts_all_on():
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(-2, 2)
    decoupled = decouple(model, DecoupleConfig(gate_bias_order="bn_scale", gate_bias_init=2.0), num_classes=10,
                         input_shape=(1, 8, 8), model_name="digits_cnn")
    gated_outputs = [m for m in decoupled.modules() if type(m).__name__ == "GatedOutput"]
    for gate, output in zip(decoupled.gate_modules(), gated_outputs):
        bias = gate.controller.expand.bias.detach()
        assert bias.min().item() == pytest.approx(0.5) and bias.max().item() == pytest.approx(2.0)
        assert torch.equal(bias.argsort(), output.batchnorm.weight.detach().abs().argsort())
    decoupled.eval()
    decoupled(torch.randn(16, 1, 8, 8))
    assert all(bool((z == 1).all()) for z in decoupled.last_gates())
    with pytest.raises(UserInputError, match="gate bias order"):
        digits_decoupled(gate_bias_order="random")


def test_detached_gate_input_keeps_gate_losses_out_of_the_features():
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    grads = {}
    for detach in (False, True):
        _, decoupled = digits_decoupled(detach_gate_input=detach, lambda_kl=0.0, lambda_sparsity=1.0, sparsity_ratio=0.5)
        decoupled.train()
        torch.manual_seed(1)
        for gate in decoupled.gate_modules():  # W2 starts at 0, which would block the path by itself
            torch.nn.init.normal_(gate.controller.expand.weight, std=0.1)
        objective = DecouplingObjective(decoupled, steps_per_epoch=10)
        _, _, terms = objective(decoupled, images, labels, 100)
        terms["sparsity"].backward()  # the sparsity term alone: it reaches the network only through the gates
        first_conv = decoupled.network.features[0]
        grads[detach] = first_conv.weight.grad
        assert all(m.controller.expand.bias.grad is not None for m in decoupled.gate_modules())
    assert grads[False] is not None and grads[False].abs().sum() > 0
    assert grads[True] is None or grads[True].abs().sum() == 0

# --- FLOPs under gates and filter states ------------------------------------------------------

class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.c3, self.b3 = nn.Conv2d(12, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.c4, self.b4 = nn.Conv2d(6, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        for conv, bn in ((self.c1, self.b1), (self.c2, self.b2), (self.c3, self.b3), (self.c4, self.b4)):
            x = F.relu(bn(conv(x)))
        return self.fc(x.mean((2, 3)))


def sliced_chain(keep2, keep3):
    """The chain with only the kept filters of c2 and c3, physically smaller."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, len(keep2), 3, padding=1, bias=False),
        nn.Conv2d(len(keep2), len(keep3), 3, padding=1, bias=False), nn.Conv2d(len(keep3), 4, 3, padding=1, bias=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    return model


def test_flops_under_gates_match_flop_counter_on_the_physically_sliced_network():
    decoupled = decouple(Chain(), DecoupleConfig(), num_classes=3, input_shape=(3, 16, 16))
    assert decoupled.gated_units == ["c2", "c3"]
    keep2, keep3 = [0, 3, 5], [1, 2, 4, 5]
    gate2 = torch.zeros(1, 12)
    gate2[0, keep2] = 1
    gate3 = torch.zeros(1, 6)
    gate3[0, keep3] = 1
    ours = decoupled.cost_model.per_input([gate2, gate3]).item()
    reference = count_flops_reference(sliced_chain(keep2, keep3), (3, 16, 16))
    assert ours == pytest.approx(reference + decoupled.cost_model.gate_flops)
    all_on = decoupled.cost_model.per_input([torch.ones(1, 12), torch.ones(1, 6)]).item()
    assert all_on == decoupled.cost_model.dense_flops + decoupled.cost_model.gate_flops
    assert decoupled.cost_model.dense_flops == count_flops_reference(Chain(), (3, 16, 16))


def test_residual_inputs_are_not_skipped():
    decoupled = decouple(create_model("resnet20"), DecoupleConfig(), num_classes=10)
    sources = dict(zip(decoupled.cost_model.unit_names, decoupled.cost_model.input_sources))
    assert sources["layer1.1.conv1"] is None  # its input is a sum of two branches
    assert sources["layer1.1.conv2"] == [(2, 0, 16)]  # fed by layer1.1.conv1 alone (gated layer 2)


def test_layer_flops_are_the_exact_slopes_of_per_input_flops_when_only_block_outputs_are_gated():
    torch.manual_seed(0)
    decoupled = decouple(create_model("resnet20"), DecoupleConfig(include=["layer*.conv1"]), num_classes=10)
    cost = decoupled.cost_model
    slopes = cost.layer_flops()
    widths = [module.conv.out_channels for module in decoupled.gate_modules()]
    assert len(slopes) == len(widths) == 9
    gates = [(torch.rand(5, width) < 0.4).float() for width in widths]
    linear = cost.per_input([torch.ones(5, width) for width in widths]) - sum(
        slope * (1 - z.mean(1).double()) for slope, z in zip(slopes, gates)
    )
    assert torch.allclose(cost.per_input(gates), linear)
    # a block's conv1 and the conv2 it feeds: 16→16 and 16→16 channels of 3×3 on 32×32, 2 FLOPs per MAC
    assert slopes[0] == 2 * (2 * 16 * 16 * 9 * 32 * 32)


def test_network_sparsity_form_trains_through_the_objective():
    _, decoupled = digits_decoupled(lambda_sparsity=1.0, sparsity_ratio=0.5, sparsity_form="network")
    decoupled.train()
    objective = DecouplingObjective(decoupled, steps_per_epoch=10)
    loss, _, terms = objective(decoupled, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)), 0)
    loss.backward()
    assert terms["sparsity"].item() > 0 and all(p.grad is not None for p in decoupled.gate_parameters())


def test_filter_states_on_a_hand_example():
    counts = [np.array([10, 0, 4]), np.array([10, 10])]
    states = filter_states(counts, 10, ["a", "b"])
    assert states["per_layer"]["a"] == {"filters": 3, "energetic": 1, "silent": 1, "dynamic": 1}
    assert states["total"]["energetic_fraction"] == pytest.approx(3 / 5)
    assert states["total"]["dynamic_fraction"] == pytest.approx(1 / 5)


def test_collect_paths_packs_bits_and_counts_activations():
    from torch.utils.data import DataLoader, TensorDataset

    _, decoupled = digits_decoupled()
    with torch.no_grad():
        for module in decoupled.gate_modules():
            module.controller.expand.weight.normal_(std=3.0)
            module.controller.expand.bias.zero_()
    loader = DataLoader(TensorDataset(torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))), batch_size=16)
    record = collect_paths(decoupled, loader, progress=False)
    paths = record.paths()
    assert paths.shape == (40, 64)
    widths = np.cumsum([0] + record.layer_widths)
    for layer, counts in enumerate(record.activation_counts):
        assert np.array_equal(paths[:, widths[layer]:widths[layer + 1]].sum(0), counts)
    assert record.flops.shape == (40,) and (record.flops <= record.dense_flops + decoupled.cost_model.gate_flops).all()


# --- training runs ----------------------------------------------------------------------------

def test_recalibrate_batchnorm_uses_evaluation_gates_and_restores_modes():
    from torch.utils.data import TensorDataset

    from filterscope.methods.decoupling.batchnorm import recalibrate_batchnorm

    _, decoupled = digits_decoupled()
    decoupled.train()
    data = TensorDataset(torch.randn(64, 1, 8, 8), torch.zeros(64, dtype=torch.long))
    recalibrate_batchnorm(decoupled, data, 64, batch_size=64)
    assert decoupled.training and all(m.noisy_gates for m in decoupled.gate_modules())
    decoupled.set_frozen_paths(True)  # during path fine-tuning the gates stay frozen afterwards
    recalibrate_batchnorm(decoupled, data, 64, batch_size=64)
    assert decoupled.frozen_paths and all(m.noisy_gates for m in decoupled.gate_modules())
    decoupled.set_frozen_paths(False)
    recalibrate_batchnorm(decoupled, data, 64, batch_size=64)
    first_bn = decoupled.network.features[1]
    expected_mean = decoupled.network.features[0](data.tensors[0]).mean(dim=(0, 2, 3))
    assert torch.allclose(first_bn.running_mean, expected_mean, atol=1e-5)
    assert first_bn.momentum == 0.1


EPOCHS_DENSE, EPOCHS_DECOUPLED = 6, 3  # small: the dense network need not be good, the gates need only start closing


def test_decouple_verb_on_digits_gives_dynamic_filters(tmp_path, capsys):
    import json

    from filterscope.cli import main
    from filterscope.training.train import TrainConfig, train

    pretrained = train(TrainConfig(model="digits_cnn", data="digits", epochs=EPOCHS_DENSE, batch_size=64, lr=0.05,
                                   run_dir=str(tmp_path / "dense"), progress=False, threads=1))
    # the main options as flags, an extension in a config file, the others with --set
    (tmp_path / "extensions.yaml").write_text("decouple:\n  sparsity_on: evaluation\n")
    code = main(["decouple", "--model", "digits_cnn", "--data", "digits", "--weights",
                 str(pretrained.run_dir / "checkpoints" / "last.pt"), "--epochs", str(EPOCHS_DECOUPLED), "--batch-size", "64",
                 "--lr", "0.02", "--lambda-sparsity", "5", "--sparsity-ratio", "0.5", "--set", "sparsity_form=mean",
                 "--config", str(tmp_path / "extensions.yaml"), "--set", "gate_lr_scale=10", "--set", "recalibrate_bn_images=1000",
                 "--quiet", "--threads", "1", "--run-dir", str(tmp_path / "decoupled")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dynamic_fraction"] > 0
    assert summary["flops_reduction"] > 1.0
    assert summary["accuracy"] > 0.5
    metrics = json.loads((tmp_path / "decoupled" / "metrics.json").read_text())
    assert metrics["decouple"]["decouple_config"]["sparsity_on"] == "evaluation"
    assert metrics["decouple"]["decouple_config"]["gate_lr_scale"] == 10
    assert len(metrics["decouple"]["history"]) == EPOCHS_DECOUPLED
    assert {"train_ce", "train_mi", "train_kl", "train_sparsity", "gated_mean_flops"} <= set(metrics["decouple"]["history"][0])
    last = metrics["decouple"]["history"][-1]  # measured on the epoch's evaluation pass, not a second one
    assert last["gated_accuracy"] == last["test_accuracy"] == summary["accuracy"]
    assert last["gated_flops_reduction"] == summary["flops_reduction"]
    assert last["gated_dynamic_fraction"] == summary["dynamic_fraction"]
    for figure in ("filter_states_test.png", "activation_counts_test.png", "flops_per_input_test.png"):
        assert (tmp_path / "decoupled" / "figures" / figure).stat().st_size > 1000
    reloaded = load_decoupled(tmp_path / "decoupled" / "checkpoints" / "last.pt")
    assert reloaded.gated_units == ["features.3", "features.7"]
    test_record = PathRecord.load(tmp_path / "decoupled" / "arrays" / "paths_test.npz")
    assert test_record.summary()["accuracy"] == summary["accuracy"]
    assert test_record.summary()["dynamic_fraction"] == summary["dynamic_fraction"]
    assert metrics["paths_test"]["flops_reduction"] == summary["flops_reduction"]

    # `filterscope paths` on another split of the finished run: written beside the test split's
    code = main(["paths", str(tmp_path / "decoupled"), "--data", "digits", "--split", "train", "--json"])
    assert code == 0
    train_summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train_record = PathRecord.load(tmp_path / "decoupled" / "arrays" / "paths_train.npz")
    spec = model_spec("digits_cnn")
    train_split = load_dataset("digits", "train", mean=spec.mean, std=spec.std)
    expected = collect_paths(reloaded, DataLoader(train_split, batch_size=500), progress=False)
    assert train_record.num_samples == expected.num_samples == train_summary["num_samples"] > 1000
    assert np.array_equal(train_record.packed_paths, expected.packed_paths)
    assert all(np.array_equal(a, b) for a, b in zip(train_record.activation_counts, expected.activation_counts))
    assert train_summary["accuracy"] == expected.accuracy
    metrics = json.loads((tmp_path / "decoupled" / "metrics.json").read_text())
    assert {"decouple", "paths_test", "paths_train"} <= set(metrics)
    assert (tmp_path / "decoupled" / "figures" / "filter_states_train.png").stat().st_size > 1000


def test_paths_verb_refuses_bad_input_in_one_sentence(tmp_path, capsys):
    from filterscope.cli import main
    from filterscope.models import save_atomically

    _, decoupled = digits_decoupled()
    save_decoupled(decoupled, tmp_path / "run" / "checkpoints" / "last.pt")
    save_atomically({"state_dict": create_model("digits_cnn", 10).state_dict()}, tmp_path / "plain.pt")
    (tmp_path / "empty_run").mkdir()
    cases = [
        (["paths", str(tmp_path / "plain.pt"), "--data", "digits"], "not a decoupled-model checkpoint"),
        (["paths", str(tmp_path / "empty_run"), "--data", "digits"], "has no checkpoints/last.pt"),
        (["paths", str(tmp_path / "missing.pt"), "--data", "digits"], "does not exist"),
        (["paths", str(tmp_path / "run"), "--data", "cifar10-missing-folder"], "cifar10-missing-folder"),
        (["paths", str(tmp_path / "run"), "--data", "digits", "--split", "val"], "val"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_semhash_hard_fraction_one_trains_with_evaluation_like_gates():
    torch.manual_seed(0)
    gates = semhash(torch.randn(16, 32), training=True, noise_std=0.0, hard_fraction=1.0)
    assert bool(((gates == 0) | (gates == 1)).all())


@pytest.mark.skipif(not cxx_compiler_available(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_step_gives_the_eager_loss_and_gradients():
    _, eager = digits_decoupled(gate_noise_std=0.0, semhash_hard_fraction=1.0, lambda_sparsity=0.1, sparsity_ratio=0.5)
    compiled_copy = copy.deepcopy(eager)
    eager.train(), compiled_copy.train()
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    objective = DecouplingObjective(eager, steps_per_epoch=10)
    eager_loss, _, eager_terms = objective(eager, images, labels, 5)
    eager_loss.backward()
    compiled_loss, _, compiled_terms = DecouplingObjective(compiled_copy, steps_per_epoch=10)(torch.compile(compiled_copy), images, labels, 5)
    compiled_loss.backward()
    assert compiled_loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    assert set(compiled_terms) == set(eager_terms)
    for (name, a), b in zip(eager.named_parameters(), compiled_copy.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


class OwnDigitsNet(nn.Module):
    """A user's own CNN, not a registered model; its attributes say how to normalise the data."""

    input_shape, input_mean, input_std = (1, 8, 8), (0.5,), (0.5,)

    def __init__(self):
        super().__init__()

        def unit(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*unit(1, 16), *unit(16, 32), *unit(32, 32), *unit(32, 32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_run_decoupling_takes_your_own_module_and_leaves_it_untouched(tmp_path):
    from filterscope.pipelines.decoupling import DecouplingRunOptions, run_decoupling
    from filterscope.training.train import TrainConfig, train

    # model="resnet20" expects 3×32×32 images: the run can only work if the module's own attributes are used
    common = dict(model="resnet20", data="digits", batch_size=64, progress=False, threads=1)
    pretrained = train(TrainConfig(**common, epochs=6, lr=0.05, run_dir=str(tmp_path / "dense")), model=OwnDigitsNet()).model
    before = copy.deepcopy(pretrained.state_dict())
    config = DecoupleConfig(lambda_sparsity=5.0, sparsity_ratio=0.5, sparsity_form="mean", sparsity_on="evaluation", gate_lr_scale=10.0)
    options = DecouplingRunOptions(recalibrate_bn_images=1000)
    summary = run_decoupling(TrainConfig(**common, epochs=4, lr=0.02, run_dir=str(tmp_path / "decoupled")), config, options,
                             model=pretrained)
    assert all(torch.equal(before[key], value) for key, value in pretrained.state_dict().items())
    assert summary["model"] == "OwnDigitsNet"
    assert summary["accuracy"] > 0.5 and summary["flops_reduction"] > 1.0

    checkpoint = tmp_path / "decoupled" / "checkpoints" / "last.pt"
    with pytest.raises(UserInputError, match="base_model"):
        load_decoupled(checkpoint)
    reloaded = load_decoupled(checkpoint, base_model=OwnDigitsNet())
    test = load_dataset("digits", "test", mean=OwnDigitsNet.input_mean, std=OwnDigitsNet.input_std)
    assert collect_paths(reloaded, DataLoader(test, batch_size=500), progress=False).accuracy == summary["accuracy"]

    # the checkpoint carries the normalisation, so the paths of another split need only the architecture
    from filterscope.pipelines.paths import record_checkpoint_paths

    train_summary = record_checkpoint_paths(tmp_path / "decoupled", "digits", split="train", base_model=OwnDigitsNet(),
                                            progress=False)
    train_split = load_dataset("digits", "train", mean=OwnDigitsNet.input_mean, std=OwnDigitsNet.input_std)
    assert train_summary["accuracy"] == collect_paths(reloaded, DataLoader(train_split, batch_size=500), progress=False).accuracy
    assert reloaded.input_mean == OwnDigitsNet.input_mean and reloaded.input_std == OwnDigitsNet.input_std

    with pytest.raises(UserInputError, match="not both"):
        run_decoupling(TrainConfig(**common, weights=str(checkpoint), run_dir=str(tmp_path / "both")), config, options,
                       model=pretrained)


def test_decouple_keeps_your_networks_normalisation_through_save_and_load(tmp_path):
    decoupled = decouple(OwnDigitsNet(), DecoupleConfig(), num_classes=10, input_shape=(1, 8, 8))
    assert (decoupled.input_mean, decoupled.input_std) == (OwnDigitsNet.input_mean, OwnDigitsNet.input_std)
    save_decoupled(decoupled, tmp_path / "own.pt")
    reloaded = load_decoupled(tmp_path / "own.pt", base_model=OwnDigitsNet())
    assert (reloaded.input_mean, reloaded.input_std) == (OwnDigitsNet.input_mean, OwnDigitsNet.input_std)
    plain = decouple(create_model("digits_cnn", 10), DecoupleConfig(), num_classes=10, input_shape=(1, 8, 8))
    assert getattr(plain, "input_mean", None) is None  # built-in models take theirs from the registry


def spread_gate_logits(decoupled):
    with torch.no_grad():
        for module in decoupled.gate_modules():
            module.controller.expand.weight.normal_(std=1.0)
            module.controller.expand.bias.normal_(std=0.3)
    return decoupled.eval()


def test_shifted_threshold_opens_the_gates_where_the_logits_exceed_it(tmp_path):
    from filterscope import shift_gate_threshold

    _, decoupled = digits_decoupled()
    spread_gate_logits(decoupled)
    images = torch.randn(32, 1, 8, 8)
    reference = decoupled(images)
    logits = [slot.gate_logits.clone() for slot in decoupled.slots]
    shifted = shift_gate_threshold(decoupled, -0.2)  # a deep copy, though the last pass left tensors with a graph
    assert shifted.slots[0] is shifted.gate_modules()[0].slot is not decoupled.slots[0]
    shifted(images)
    assert torch.equal(shifted.last_gates()[0], (logits[0] > -0.2).float())  # the first gated layer sees the same input
    assert shifted.last_gates()[0].sum() > (logits[0] > 0).sum()
    assert torch.equal(decoupled(images), reference)  # the original is untouched
    back = shift_gate_threshold(shifted, 0.2)
    assert back.gate_threshold == pytest.approx(0.0)
    assert torch.allclose(back(images), reference, atol=1e-6)
    save_decoupled(shifted, tmp_path / "shifted.pt")
    reloaded = load_decoupled(tmp_path / "shifted.pt")
    assert reloaded.gate_threshold == pytest.approx(-0.2)
    assert torch.allclose(reloaded(images), shifted(images), atol=1e-6)
    assert shift_gate_threshold(back, -0.2, in_place=True) is back  # a training run moving its own gates
    assert back.gate_threshold == pytest.approx(-0.2) and torch.allclose(back(images), shifted(images), atol=1e-6)


def test_threshold_for_flops_finds_the_smallest_threshold_meeting_the_target():
    from torch.utils.data import DataLoader, TensorDataset

    from filterscope import shift_gate_threshold
    from filterscope import threshold_for_flops

    _, decoupled = digits_decoupled(include=["features.3"])  # one gated layer: FLOPs fall monotonically with τ
    spread_gate_logits(decoupled)
    loader = DataLoader(TensorDataset(torch.randn(64, 1, 8, 8), torch.zeros(64, dtype=torch.long)), batch_size=32)

    def reduction(threshold):
        return collect_paths(shift_gate_threshold(decoupled, threshold), loader, progress=False).summary()["flops_reduction"]

    target = (reduction(-1.0) + reduction(1.0)) / 2
    threshold, measured = threshold_for_flops(decoupled, loader, target, steps=14)
    assert measured == pytest.approx(reduction(threshold)) and measured >= target
    assert reduction(threshold - 2 * 2 / 2**14) < target
    with pytest.raises(UserInputError, match="raise the upper end"):
        threshold_for_flops(decoupled, loader, 100.0)


def test_run_decoupling_is_reproducible_whatever_the_global_random_state(tmp_path):
    """A registered model without weights is drawn at random: from the run's seed, not the process's generator."""
    from filterscope.pipelines.decoupling import DecouplingRunOptions, run_decoupling
    from filterscope.training.train import TrainConfig

    def history(global_seed: int, name: str) -> list[dict]:
        torch.manual_seed(global_seed)  # what earlier work in the process left behind
        config = TrainConfig(model="digits_cnn", data="digits", batch_size=64, lr=0.02, epochs=1, progress=False,
                             threads=1, run_dir=str(tmp_path / name))
        summary = run_decoupling(config, DecoupleConfig(lambda_sparsity=5.0, sparsity_ratio=0.7, sparsity_form="mean"),
                                 DecouplingRunOptions(recalibrate_bn_images=200, save_paths=False))
        return summary["history"]

    first, second = history(1, "a"), history(2, "b")
    assert [entry["test_accuracy"] for entry in first] == [entry["test_accuracy"] for entry in second]
    assert [entry["gated_flops_reduction"] for entry in first] == [entry["gated_flops_reduction"] for entry in second]


def test_resuming_a_finished_decoupling_measures_again_what_the_last_epoch_recorded(tmp_path):
    """The final record reuses the last epoch's evaluation pass; with no epoch left, it is measured afresh."""
    from filterscope.pipelines.decoupling import DecouplingRunOptions, run_decoupling
    from filterscope.training.train import TrainConfig

    def run(resume: bool, lambda_sparsity: float = 5.0) -> tuple[dict, PathRecord]:
        config = TrainConfig(model="digits_cnn", data="digits", batch_size=64, lr=0.02, epochs=2, progress=False,
                             threads=1, run_dir=str(tmp_path / "run"), resume=resume)
        summary = run_decoupling(config, DecoupleConfig(lambda_sparsity=lambda_sparsity, sparsity_ratio=0.5, sparsity_form="mean",
                                                        sparsity_on="evaluation", gate_lr_scale=10),
                                 DecouplingRunOptions(recalibrate_bn_images=200))
        return summary, PathRecord.load(tmp_path / "run" / "arrays" / "paths_test.npz")

    trained, trained_paths = run(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed, resumed_paths = run(True)
    assert not [w for w in caught if "settings changed" in str(w.message)]  # the same settings: nothing to say
    # a run begun by an earlier version recorded the options that are gone: resuming it names no change
    import yaml

    recorded = yaml.safe_load((tmp_path / "run" / "decouple.yaml").read_text())
    recorded["decouple"].update(kl_epsilon=1e-6, kl_detach_response=True, mi_classifier_full_rate=True)
    recorded["options"]["use_kl"] = True
    (tmp_path / "run" / "decouple.yaml").write_text(yaml.safe_dump(recorded))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(True)
    assert not [w for w in caught if "settings changed" in str(w.message)]
    with pytest.warns(UserWarning, match=r"decouple\.lambda_sparsity: 5\.0 -> 6\.0"):
        run(True, lambda_sparsity=6.0)
    assert resumed["history"] == trained["history"]  # nothing was trained again
    for key in ("accuracy", "num_samples", "mean_flops", "flops_reduction", "dynamic_fraction", "silent_fraction"):
        assert resumed[key] == pytest.approx(trained[key], abs=1e-12), key
    assert trained["flops_reduction"] > 1.0
    assert np.array_equal(resumed_paths.packed_paths, trained_paths.packed_paths)
    assert np.array_equal(resumed_paths.predictions, trained_paths.predictions)


def test_run_decoupling_moves_the_threshold_to_a_flops_target_before_path_finetuning(tmp_path):
    from filterscope.pipelines.decoupling import DecouplingRunOptions, run_decoupling
    from filterscope.training.train import TrainConfig

    common = dict(model="digits_cnn", data="digits", batch_size=64, lr=0.02, progress=False, threads=1)
    config = DecoupleConfig(lambda_sparsity=5.0, sparsity_ratio=0.7, sparsity_form="mean", sparsity_on="evaluation",
                            gate_lr_scale=10.0, path_finetune_epochs=1)
    options = DecouplingRunOptions(recalibrate_bn_images=1000, flops_target=1.5, flops_target_images=1000, save_paths=False)
    summary = run_decoupling(TrainConfig(**common, epochs=3, run_dir=str(tmp_path / "run")), config, options)
    history = summary["history"]
    assert history[0]["gate_threshold"] == 0.0
    moved = history[1]["gate_threshold"]  # moved after epoch 2, kept through the path fine-tuning of epoch 3
    assert moved != 0.0 and history[2]["gate_threshold"] == moved
    assert 1.5 * 0.9 <= history[1]["gated_flops_reduction"]  # chosen on training images (BatchNorms re-estimated), measured on the test split
    reloaded = load_decoupled(tmp_path / "run" / "checkpoints" / "last.pt")
    assert reloaded.gate_threshold == moved

    # The search holds the reduction after BatchNorm re-estimation to the target, from either side
    from filterscope.methods.decoupling.batchnorm import recalibrate_batchnorm
    from filterscope.pipelines.decoupling import move_threshold_to_target
    from filterscope.training.train import input_normalization, load_data

    train_config = TrainConfig(**common, epochs=3, run_dir=str(tmp_path / "unused"))
    mean, std, shape = input_normalization(train_config, None)
    train_set, _ = load_data(train_config, mean, std, shape, None)
    for target in (2.0, 1.2):
        reached = move_threshold_to_target(reloaded, train_config, replace(options, flops_target=target), mean, std, shape,
                                           lambda: recalibrate_batchnorm(reloaded, train_set, 1000))
        assert target <= reached <= target * 1.02
    # A target the gates cannot reach does not throw the run's epochs away: the largest reduction found stays, with a warning
    with pytest.warns(UserWarning, match="not the target 1000×.*lower --flops-target"):
        reached = move_threshold_to_target(reloaded, train_config, replace(options, flops_target=1000.0), mean, std, shape,
                                           lambda: recalibrate_batchnorm(reloaded, train_set, 1000))
    assert 2.0 < reached < 1000.0

    for finetune in (0, 0.5):
        with pytest.raises(UserInputError, match="path_finetune_epochs"):
            run_decoupling(TrainConfig(**common, epochs=3, run_dir=str(tmp_path / "bad")),
                           DecoupleConfig(path_finetune_epochs=finetune), options)
    with pytest.raises(UserInputError, match="unknown distill phase 'finetune'; choose one of all, path_finetune"):
        run_decoupling(TrainConfig(**common, epochs=3, run_dir=str(tmp_path / "bad")), config,
                       DecouplingRunOptions(distill_weight=1.0, distill_phase="finetune"))
    with pytest.raises(UserInputError, match="needs a path fine-tuning phase"):
        run_decoupling(TrainConfig(**common, epochs=3, run_dir=str(tmp_path / "bad")), DecoupleConfig(),
                       DecouplingRunOptions(distill_weight=1.0, distill_phase="path_finetune"))
    for target in (-1.0, 0.5, 1.0):
        with pytest.raises(UserInputError, match="FLOPs target must be a reduction above 1"):
            run_decoupling(TrainConfig(**common, epochs=3, run_dir=str(tmp_path / "bad")), config,
                           DecouplingRunOptions(flops_target=target))


DDP_DECOUPLE = """
import sys, torch, torch.distributed as dist
from filterscope.methods.decoupling import DecoupleConfig
from filterscope.pipelines.decoupling import DecouplingRunOptions, run_decoupling
from filterscope.training.train import TrainConfig
out = sys.argv[1]
config = DecoupleConfig(lambda_sparsity=5.0, sparsity_ratio=0.6, sparsity_form="mean", sparsity_on="evaluation", gate_lr_scale=10.0,
                        path_finetune_epochs=1)  # the last epoch with frozen gates: parameters without gradient
summary = run_decoupling(TrainConfig(model="digits_cnn", data="digits", epochs=3, batch_size=64, lr=0.02, seed=1,
                                     run_dir=out + "/run", progress=False), config, DecouplingRunOptions(recalibrate_bn_images=500))
last = summary["history"][-1]
torch.save({key: summary[key] for key in ("accuracy", "num_samples", "mean_flops", "dynamic_fraction")}
           | {"epoch_accuracy": last["gated_accuracy"], "epoch_mean_flops": last["gated_mean_flops"]},
           f"{out}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def test_torchrun_decoupling_records_the_whole_test_split_in_order_on_every_process(tmp_path):
    completed = run_torchrun(DDP_DECOUPLE, tmp_path)
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    test = load_dataset("digits", "test", mean=model_spec("digits_cnn").mean, std=model_spec("digits_cnn").std)
    # Each process measured the whole split (both shards), not its own half, and the epoch's
    # metrics are those of the final record.
    assert rank0 == rank1
    assert rank0["num_samples"] == len(test)
    assert rank0["epoch_accuracy"] == rank0["accuracy"] and rank0["epoch_mean_flops"] == rank0["mean_flops"]
    record = PathRecord.load(tmp_path / "run" / "arrays" / "paths_test.npz")
    assert record.num_samples == len(record.labels) == len(record.flops) == len(record.packed_paths) == len(test)
    # In the data set's order: the same as one process measuring the saved network over the split.
    reloaded = load_decoupled(tmp_path / "run" / "checkpoints" / "last.pt")
    single = collect_paths(reloaded, DataLoader(test, batch_size=500), progress=False)
    assert np.array_equal(record.labels, single.labels)
    assert np.array_equal(record.labels, np.array([label for _, label in test]))
    same_path = (record.packed_paths == single.packed_paths).all(1)
    assert same_path.mean() >= 0.99, same_path.mean()  # batch composition may flip a gate sitting at 0
    assert abs(record.accuracy - single.accuracy) <= 0.01


def test_decouple_help_lists_the_main_options_and_set_reaches_the_others(tmp_path, capsys):
    import re

    from filterscope.cli import main

    with pytest.raises(SystemExit):
        main(["decouple", "--help"])
    shown = capsys.readouterr().out
    flags = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", shown, flags=re.MULTILINE))
    assert len(flags | {"--help"}) <= 25, sorted(flags)  # -h, --help included
    assert {"--config", "--set", "--lambda-sparsity", "--sparsity-ratio", "--include", "--flops-target"} <= flags
    assert "--sparsity-on" not in flags and "--set NAME=VALUE" in shown
    cases = [
        (["--set", "sparsity_on"], "is not NAME=VALUE"),
        (["--set", "include=[a"], "not valid YAML"),
        (["--set", "sparsity_onn=evaluation"], "unknown option(s) sparsity_onn"),
        (["--set", "kl_epsilon=0.01"], "kl_epsilon=0.01, which this version no longer offers"),
        (["--set", "sparsity_on=sometimes"], "unknown sparsity on 'sometimes'; choose one of noisy, evaluation"),
    ]
    for extra, fragment in cases:
        code = main(["decouple", "--model", "digits_cnn", "--data", "digits", "--run-dir", str(tmp_path / "bad"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and fragment in err and len(err.splitlines()) == 1, (extra, err)
