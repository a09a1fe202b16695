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
