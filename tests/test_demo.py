"""``filterscope demo`` end to end (short epochs) and its report, opened in headless Chromium.

One demo run is shared by the module: it trains, decouples and runs every analysis into one run
directory. The report's full-page screenshot is kept under ``test-artifacts/`` (or
``$FILTERSCOPE_TEST_ARTIFACTS``) for a person to look at.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from browser import open_page, require_browser
from filterscope.pipelines.demo_steps import STEPS
from filterscope.report.html import build_report, present_sections
from filterscope.report.sections import SECTIONS

ARTIFACTS = Path(os.environ.get("FILTERSCOPE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
ANALYSES = ("model", "training", "decoupling", "paths", "concepts", "adversarial", "semantic", "influence", "engine")


def run_demo_cli(*argv: str) -> subprocess.CompletedProcess:
    """``python -m filterscope ARGV`` on one intra-op thread, its output captured; asserts it succeeded."""
    completed = subprocess.run([sys.executable, "-m", "filterscope", *argv], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "demo"
    completed = run_demo_cli("demo", "--run-dir", str(run_dir), "--epochs", "3", "--decouple-epochs", "3")
    return run_dir, completed.stdout


def test_demo_prints_one_line_per_step_and_the_report(demo_run):
    run_dir, stdout = demo_run
    for name, _ in STEPS:
        assert re.search(rf"^  {re.escape(name)} +\S", stdout, re.MULTILINE), f"no result line for {name!r}:\n{stdout}"
    assert "skipped" not in stdout  # on digits every step runs
    assert stdout.strip().splitlines()[-1] == f"report: {run_dir / 'report.html'}"


def test_demo_writes_every_analysis_into_one_run_directory(demo_run):
    run_dir, _ = demo_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train", "demo", "path_embedding", "path_tree", "occlusion", "dissection", "adversarial",
                "semantic_pruning", "influence", "bench"):
        assert key in metrics, key
    assert metrics["demo"]["conv_units"] == 4 and metrics["demo"]["flops_per_image"] == 1_198_720
    assert set(metrics["demo"]["steps"]) == {name for name, _ in STEPS}
    assert 0.3 < metrics["train"]["final"]["accuracy"] <= 1.0
    decoupled = json.loads((run_dir / "decoupled" / "metrics.json").read_text())
    assert decoupled["decouple"]["flops_reduction"] > 1.0
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "decoupled" / "checkpoints" / "last.pt").is_file()
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["demo"]["packages"]["torch"] and environment["demo"]["cpus"] >= 1


def test_report_has_every_section_in_order_with_a_figure_each_and_no_external_url(demo_run):
    run_dir, _ = demo_run
    assert [s.key for s in present_sections(run_dir)] == list(ANALYSES)
    page = (run_dir / "report.html").read_text()
    positions = [page.index(f'<section id="{key}">') for key in ANALYSES]
    assert positions == sorted(positions)
    for key in ANALYSES[1:]:  # every analysis (the model's own section is a table) shows at least one figure
        section = page[page.index(f'<section id="{key}">'):page.index("</section>", page.index(f'<section id="{key}">'))]
        assert "<img " in section and "<table>" in section, key
    images = re.findall(r'<img src="([^"]+)" alt="([^"]*)"', page)
    assert len(images) >= 15 and all(alt.strip() for _, alt in images)
    assert all((run_dir / src).is_file() for src, _ in images)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http://" not in page and "https://" not in page
    assert "<h2>Configuration</h2>" in page and "<h2>Versions and machine</h2>" in page


def test_report_rebuilds_from_a_copied_folder_and_shows_an_analysis_added_later(demo_run, tmp_path):
    run_dir, _ = demo_run
    copy = tmp_path / "elsewhere"
    shutil.copytree(run_dir, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    bench = metrics.pop("bench")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    (copy / "figures" / "engine_latency.png").unlink()
    page = build_report(copy).read_text()
    assert '<section id="engine">' not in page and '<section id="adversarial">' in page
    metrics["bench"] = bench
    (copy / "metrics.json").write_text(json.dumps(metrics))
    page = build_report(copy).read_text()
    assert '<section id="engine">' in page and (copy / "figures" / "engine_latency.png").is_file()


def test_report_in_a_browser_loads_every_image_without_console_errors(demo_run):
    require_browser()
    run_dir, _ = demo_run
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = open_page(run_dir / "report.html", ARTIFACTS / "demo-report.png")
    assert report.images and all(width > 0 for _, width in report.images), report.images
    assert report.console_errors == [] and report.external_requests == []
    titles = {s.key: s.title for s in SECTIONS}
    assert [h for h, i in zip(report.headings, report.section_ids) if i in titles] == [titles[k] for k in ANALYSES]
    assert report.screenshot.stat().st_size > 50_000


def test_single_file_report_embeds_every_figure(demo_run, tmp_path):
    require_browser()
    run_dir, _ = demo_run
    copy = tmp_path / "single"
    shutil.copytree(run_dir, copy)
    page_path = build_report(copy, single_file=True)
    alone = tmp_path / "mailed.html"
    shutil.copy(page_path, alone)  # the page without its folder
    page = alone.read_text()
    assert 'src="figures/' not in page and page.count('src="data:image/png;base64,') >= 15
    report = open_page(alone, tmp_path / "single.png")
    assert report.images and all(width > 0 for _, width in report.images)
    assert report.console_errors == []


def test_demo_of_a_decoupled_checkpoint_skips_training_and_analyses_it(demo_run, tmp_path):
    run_dir, _ = demo_run
    target = tmp_path / "given"
    run_demo_cli("demo", "--weights", str(run_dir / "decoupled" / "checkpoints" / "last.pt"), "--run-dir", str(target), "--quiet")
    steps = json.loads((target / "metrics.json").read_text())["demo"]["steps"]
    assert steps["train"].startswith("skipped: ") and steps["decouple"].startswith("skipped: ")
    assert not any(line.startswith("skipped") for name, line in steps.items() if name not in ("train", "decouple"))
    assert (target / "dense.pt").is_file() and "paths_test" in json.loads((target / "metrics.json").read_text())
    assert [s.key for s in present_sections(target)] == [k for k in ANALYSES if k != "training"]


PLAIN_VGG_PLUGIN = '''
import sys
sys.path.insert(0, {tests!r})
from zoo import PlainVGG
from filterscope import register_model

@register_model("my_plain_vgg", input_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), description="BN-free VGG, grayscale")
def build(num_classes):
    return PlainVGG(num_classes, in_channels=1, widths=(8, 8, 16), spatial=8)
'''


def test_demo_runs_on_a_users_own_bn_free_network_through_a_plugin(tmp_path):
    plugin = tmp_path / "my_models.py"
    plugin.write_text(PLAIN_VGG_PLUGIN.format(tests=str(Path(__file__).resolve().parent)))
    target = tmp_path / "mine"
    run_demo_cli("--plugin", str(plugin), "demo", "--model", "my_plain_vgg", "--data", "digits", "--epochs", "3",
                 "--decouple-epochs", "2", "--run-dir", str(target), "--quiet")
    demo = json.loads((target / "metrics.json").read_text())["demo"]
    assert demo["model"] == "my_plain_vgg" and set(demo["steps"]) == {name for name, _ in STEPS}
    for name, line in demo["steps"].items():  # each step ran, or says in one sentence why it could not
        assert line and "Traceback" not in line, (name, line)
    assert not demo["steps"]["decouple"].startswith("skipped")  # gates on a network without BatchNorm
    assert (target / "report.html").is_file()


def test_demo_goes_on_when_a_network_cannot_be_decoupled_and_says_why(tmp_path):
    plugin = tmp_path / "my_models.py"
    plugin.write_text(PLAIN_VGG_PLUGIN.format(tests=str(Path(__file__).resolve().parent)).replace("(8, 8, 16)", "(8, 8)"))
    target = tmp_path / "two_convs"
    run_demo_cli("--plugin", str(plugin), "demo", "--model", "my_plain_vgg", "--data", "digits", "--epochs", "1",
                 "--decouple-epochs", "1", "--run-dir", str(target), "--quiet")
    steps = json.loads((target / "metrics.json").read_text())["demo"]["steps"]
    assert steps["decouple"].startswith("skipped: ") and "needs at least 3" in steps["decouple"]
    assert steps["path embedding"].startswith("skipped: it reads the decoupled model")
    assert not steps["semantic pruning"].startswith("skipped") and not steps["influence"].startswith("skipped")
    assert [s.key for s in present_sections(target)] == ["model", "training", "semantic", "influence"]
