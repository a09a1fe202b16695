"""``filterscope bench`` and the pieces it stands on: timing side by side, pruned checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from filterscope.cli import main
from filterscope.core.errors import UserInputError
from filterscope.engine.latency import time_latency, time_throughput
from filterscope.models import create_model
from filterscope.models.checkpoint import save_atomically
from filterscope.models.pruned import load_pruned, shrink_filters
from filterscope.engine import compiled_gate
from filterscope.report.tables import engine_tables

FIXTURE = Path(__file__).parent / "fixtures" / "decoupled_digits_demo.pt"


def test_bench_writes_every_row_with_latency_accuracy_and_flops(tmp_path, capsys):
    run_dir = tmp_path / "bench"
    code = main(["bench", "--weights", str(FIXTURE), "--data", "digits", "--inputs", "8", "--repeats", "2",
                 "--calibration", "50", "--routes", "stock", "flat-torch-gates", "--run-dir", str(run_dir), "--quiet",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == {"dense", "dense executor", "decoupled (masked)", "executor", "static per path"}
    assert rows["executor"]["accuracy"] == rows["decoupled (masked)"]["accuracy"] > 0.5
    assert rows["executor"]["flops_reduction"] > 1.0 and rows["dense"]["flops_reduction"] == 1.0
    assert all(row["latency_us"]["median"] > 0 and row["latency_us"]["repeats"] == 2 for row in rows.values())
    assert max(rows["dense"]["speedup"], rows["dense executor"]["speedup"]) == pytest.approx(1.0)
    assert set(result["throughput"]) >= {"dense", "executor (union)", "executor (mask)"}
    assert json.loads((run_dir / "metrics.json").read_text())["bench"]["rows"][0]["name"] == "dense"
    assert (run_dir / "bench.md").read_text().startswith("| model |")
    assert "Gates of the executor row:" in (run_dir / "bench.md").read_text()
    assert result["routes"]["flat-torch-gates"]["gate_kernels"] == ["torch"]
    assert result["gate_kernels"] == (["compiled"] if compiled_gate.unavailable_reason() is None else ["torch"])
    html = engine_tables(result)
    assert "flat-torch-gates" in html and "the executor row&#x27;s gates" in html


def test_bench_refuses_a_plain_checkpoint_in_one_sentence(tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    torch.save(create_model("digits_cnn", 10).state_dict(), plain)
    assert main(["bench", "--weights", str(plain), "--data", "digits", "--quiet"]) == 2
    assert "not a decoupled-model checkpoint" in capsys.readouterr().err


def test_timing_runs_every_model_on_every_input_in_each_repeat():
    calls = {"a": 0, "b": 0}

    def counter(name):
        def run(_):
            calls[name] += 1
        return run

    result = time_latency({"a": counter("a"), "b": counter("b")}, 5, repeats=3)
    assert calls == {"a": 20, "b": 20}  # a warm-up pass and three timed ones
    assert result["a"]["repeats"] == 3 and result["a"]["p10"] <= result["a"]["median"] <= result["a"]["p90"]
    throughput = time_throughput({"a": lambda batch: batch.sum()}, [torch.ones(4, 2)] * 2, repeats=2)
    assert throughput["a"]["median"] > 0


def test_a_pruned_checkpoint_is_rebuilt_without_the_library_that_pruned_it(tmp_path):
    torch.manual_seed(0)
    pruned = shrink_filters(create_model("resnet20", 10), {"layer1.0.conv1": 5, "layer3.2.conv1": 30}).eval()
    path = save_atomically({"format": "filterscope.pruned.v1", "model": "resnet20", "num_classes": 10,
                            "channels": {"layer1.0.conv1": 5, "layer3.2.conv1": 30}, "state_dict": pruned.state_dict()},
                           tmp_path / "pruned.pt")
    loaded = load_pruned(path)
    assert loaded.layer1[0].conv2.in_channels == 5 and loaded.layer3[2].bn1.num_features == 30
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), pruned(images))
    with pytest.raises(UserInputError, match="not a pruned-model checkpoint"):
        load_pruned(FIXTURE)
    with pytest.raises(UserInputError, match="no conv named"):
        shrink_filters(create_model("resnet20", 10), {"layer9.conv1": 3})


def test_bench_measures_accuracy_and_flops_on_the_requested_share_of_the_test_split():
    from filterscope.pipelines.bench import BenchOptions, run_bench

    options = dict(weights=str(FIXTURE), data="digits", inputs=4, repeats=1, calibration=50, routes=(),
                   throughput_batches=1, throughput_repeats=1, progress=False)
    every = {r["name"]: r for r in run_bench(BenchOptions(**options))["rows"]}
    some = {r["name"]: r for r in run_bench(BenchOptions(**options, eval_images=40))["rows"]}
    assert round(some["executor"]["accuracy"] * 40, 6) == int(round(some["executor"]["accuracy"] * 40))  # k of 40
    assert round(every["executor"]["accuracy"] * 359, 6) == int(round(every["executor"]["accuracy"] * 359))  # k of 359
    assert some["executor"]["flops"] != every["executor"]["flops"]  # mean FLOPs per input over the 40 only
