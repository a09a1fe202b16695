"""Decoupled checkpoints written by earlier versions of filterscope keep loading, with identical outputs.

``fixtures/decoupled_digits_demo.pt`` is the decoupled checkpoint that ``filterscope demo`` wrote before the
package took its layered shape (format ``filterscope.decoupled/1``, with the training schedule inside);
``fixtures/decoupled_digits_demo_expected.pt`` holds 16 fixed inputs with the logits and gates that
checkpoint produced then.
"""

from __future__ import annotations

from pathlib import Path

import torch

import filterscope as fs

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_demo_checkpoint_of_the_earlier_layout_gives_identical_logits_and_gates():
    model = fs.load_decoupled(FIXTURES / "decoupled_digits_demo.pt")
    expected = torch.load(FIXTURES / "decoupled_digits_demo_expected.pt", weights_only=True)
    with torch.no_grad():
        logits = model(expected["inputs"])
    gates = torch.cat([z.float() for z in model.last_gates()], 1)
    assert torch.equal(logits, expected["logits"])
    assert torch.equal(gates, expected["gates"])
    assert model.input_shape == (1, 8, 8)
    assert tuple(model.input_mean) == (0.5,) and tuple(model.input_std) == (0.5,)


def test_eval_takes_a_decoupled_checkpoint_with_its_evaluation_gates():
    from filterscope.analyses.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint("digits_cnn", str(FIXTURES / "decoupled_digits_demo.pt"), "digits", progress=False)
    # the accuracy `filterscope demo` reported for this decoupled model when it wrote the checkpoint
    assert result["num_samples"] == 359
    assert round(result["accuracy"], 4) == 0.9136


def test_eval_names_the_base_model_of_a_decoupled_checkpoint_given_with_another_model():
    import pytest

    from filterscope.analyses.evaluate import evaluate_checkpoint

    with pytest.raises(fs.UserInputError, match="is a decoupled digits_cnn, not a resnet20; pass --model digits_cnn"):
        evaluate_checkpoint("resnet20", str(FIXTURES / "decoupled_digits_demo.pt"), "digits", progress=False)


def test_per_class_analyses_name_the_verbs_that_take_a_decoupled_checkpoint(capsys):
    from filterscope.cli import main

    for verb in ("influence", "semantic-prune"):
        code = main([verb, "--model", "digits_cnn", "--data", "digits", "--weights", str(FIXTURES / "decoupled_digits_demo.pt")])
        err = capsys.readouterr().err
        assert code == 2 and "is a decoupled checkpoint" in err and "filterscope paths" in err and "Traceback" not in err


SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "resnet20-cifar10-2x-seed1.pt"


def test_the_shipped_resnet20_checkpoint_gives_the_logits_the_earlier_layout_gave():
    """checkpoints/resnet20-cifar10-2x-seed1.pt was trained and written by the code before the layered shape;
    its logits and gates on 8 fixed inputs, computed then, are in the fixture."""
    import hashlib

    import pytest

    if not SHIPPED.exists():
        pytest.skip("checkpoints/resnet20-cifar10-2x-seed1.pt is not in this checkout")
    readme = (SHIPPED.parent / "README.md").read_text()
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() in readme
    model = fs.load_decoupled(SHIPPED)
    expected = torch.load(FIXTURES / "resnet20_cifar10_2x_seed1_expected.pt", weights_only=True)
    with torch.no_grad():
        logits = model(expected["inputs"])
    assert torch.equal(logits, expected["logits"])
    assert torch.equal(torch.cat([z.float() for z in model.last_gates()], 1), expected["gates"])
