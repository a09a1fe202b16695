"""The headless-Chromium harness (tests/browser.py) on hand-written pages."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import browser
from browser import open_page


@pytest.fixture
def chromium():
    browser.require_browser()


def _png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _page(tmp_path: Path, body: str) -> Path:
    html = tmp_path / "report.html"
    html.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>t</title></head>"
                    f"<body>{body}</body></html>")
    return html


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_tall_page_with_figure_and_sections(chromium, tmp_path):
    _png(tmp_path / "figures" / "a.png")
    html = _page(tmp_path, "<h1>Report</h1>"
                 "<section id='summary'><h2>Summary</h2><img src='figures/a.png' alt='a'></section>"
                 "<section id='layers'><h2> Layers </h2><div style='height:3000px'></div></section>")
    shot = tmp_path / "artifacts" / "page.png"
    report = open_page(html, shot)
    assert report.images == [("figures/a.png", 100)]  # 2 in * 50 dpi
    assert report.headings == ["Summary", "Layers"]
    assert report.section_ids == ["summary", "layers"]
    assert report.console_errors == []
    assert report.external_requests == []
    assert report.screenshot == shot and shot.exists()
    width, height = _png_size(shot)
    assert height > report.viewport[1] and height >= 3000


def test_single_file_page_with_embedded_png(chromium, tmp_path):
    data = base64.b64encode(_png(tmp_path / "a.png").read_bytes()).decode()
    html = _page(tmp_path, f"<section id='s'><h2>Only</h2><img src='data:image/png;base64,{data}'></section>")
    report = open_page(html, tmp_path / "page.png")
    [(src, width)] = report.images
    assert src.startswith("data:image/png;base64,") and src.endswith("...") and width == 100
    assert report.console_errors == [] and report.external_requests == []
    assert report.headings == ["Only"] and report.section_ids == ["s"]


def test_missing_image_file(chromium, tmp_path):
    html = _page(tmp_path, "<h2>Broken</h2><img src='figures/missing.png'>")
    report = open_page(html, tmp_path / "page.png")
    assert report.images == [("figures/missing.png", 0)]
    assert any("missing.png" in e for e in report.console_errors), report.console_errors
    assert report.section_ids == [""]


def test_console_error_is_reported(chromium, tmp_path):
    html = _page(tmp_path, "<h2>Script</h2><script>console.error('x')</script>")
    report = open_page(html, tmp_path / "page.png")
    assert len(report.console_errors) == 1 and '"x"' in report.console_errors[0]


def test_uncaught_exception_is_reported(chromium, tmp_path):
    html = _page(tmp_path, "<script>undefinedFunction()</script>")
    report = open_page(html, tmp_path / "page.png")
    assert any("undefinedFunction" in e for e in report.console_errors), report.console_errors


def test_external_urls_are_listed_without_network(chromium, tmp_path):
    html = _page(tmp_path, "<link rel='stylesheet' href='http://example.invalid/s.css'>"
                 "<div style='background:url(https://example.invalid/bg.png)'>x</div>"
                 "<img src='https://example.invalid/a.png'>")
    report = open_page(html, tmp_path / "page.png")
    assert report.images == [("https://example.invalid/a.png", 0)]
    assert sorted(report.external_requests) == ["http://example.invalid/s.css",
                                                "https://example.invalid/a.png",
                                                "https://example.invalid/bg.png"]


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_browser_skips_or_fails_under_ci(monkeypatch, ci, outcome):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install chromium chromium-driver"):
        browser.require_browser()
