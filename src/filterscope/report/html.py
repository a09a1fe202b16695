"""report.html of a run directory: one page with a section per analysis present, in a fixed order.

Built only from what the run's verbs saved (metrics.json, figures/*.png, the config files, environment.json,
and the same in run folders one level inside it, e.g. a demo's ``decoupled/``); nothing is recomputed from
a model or data, so a report can be rebuilt anywhere the folder is copied, and an analysis added later
appears on the next build. Figures are linked by relative path, or embedded with ``single_file=True`` so
the page can travel alone. The page loads nothing from the network.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from fnmatch import fnmatch
from html import escape
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..io.environment import ENVIRONMENT_NAME, describe_environment, read_environment
from ..io.run_dir import check_writable, write_text_atomically
from .figures_history import draw_derived
from .sections import SECTIONS, Section, figure_text, section_of_figure, section_of_key
from .tables import generic_html, table_html, tables_for

__all__ = ["REPORT_NAME", "build_report", "present_sections"]

REPORT_NAME = "report.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: .3em; } p.intro { max-width: 60em; color: #333; } p.note { color: #8a4b00; font-size: .9em; }
nav ol { columns: 2; font-size: .95em; } caption { text-align: left; font-size: .85em; color: #555; padding: .2em 0; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .88em; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { display: inline-block; margin: .5em 1.5em 1em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; max-height: 28em; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; max-width: 40em; } details { margin: .5em 0 1em; }
div.wide { overflow-x: auto; }
"""


@dataclass
class RunFolder:
    """A folder of results: the run itself, or a run folder one level inside it."""

    path: Path
    label: str  # "" for the run itself, else the folder's name
    metrics: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


def _read_metrics(path: Path) -> dict[str, Any]:
    target = path / "metrics.json"
    if not target.is_file():
        return {}
    try:
        value = json.loads(target.read_text())
    except json.JSONDecodeError as error:
        raise UserInputError(f"{target} is not valid JSON ({error}); re-run the verb that wrote it.") from None
    return value if isinstance(value, dict) else {}


def _scan(run: Path) -> list[RunFolder]:
    """The run and the run folders one level inside it, with their metrics and figures."""
    inner = sorted(p for p in run.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    folders = [RunFolder(run, "", _read_metrics(run))] + [RunFolder(p, p.name, _read_metrics(p)) for p in inner]
    for folder in folders:
        folder.figures = sorted((folder.path / "figures").glob("*.png"))
    return folders


def _folders(run: Path) -> list[RunFolder]:
    """:func:`_scan`, after drawing the figures derived from the saved numbers."""
    for folder in _scan(run):
        try:
            draw_derived(folder.path, folder.metrics)
        except OSError:  # a read-only inner folder: its saved figures are still shown
            pass
    return _scan(run)


def _check_run(run: Path) -> None:
    if run.is_file():
        raise UserInputError(f"{str(run)!r} is a file; pass the folder a filterscope verb wrote (its --run-dir).")
    if not run.is_dir():
        raise UserInputError(f"run directory {str(run)!r} does not exist; pass the folder a filterscope verb wrote (its --run-dir).")
    if not (run / "metrics.json").is_file() and not any(run.glob("*.yaml")):
        raise UserInputError(f"{str(run)!r} is not a run directory (no metrics.json and no config .yaml in it); "
                             "pass the folder a filterscope verb wrote (its --run-dir).")


def present_sections(run_dir: str | Path) -> list[Section]:
    """The sections the report of ``run_dir`` shows, in page order (from its saved files only)."""
    run = Path(run_dir)
    _check_run(run)
    folders = _scan(run)
    keys = {section_of_key(k) for f in folders for k in f.metrics}
    figures = {section_of_figure(p.name) for f in folders for p in f.figures}
    return [s for s in SECTIONS if s in keys or s in figures]


def build_report(run_dir: str | Path, *, single_file: bool = False) -> Path:
    """Write ``run_dir/report.html`` from the run's saved files and return its path.

    Args:
        run_dir: A folder a filterscope verb wrote.
        single_file: Embed the figures in the page (base64) instead of linking them.
    """
    run = Path(run_dir)
    _check_run(run)
    check_writable(run, what="run directory")  # report.html goes into it: said now, not as an OSError
    folders = _folders(run)
    name = run.resolve().name
    body, contents, claimed = [], [], set()
    for section in SECTIONS:
        html = _section_html(section, folders, run, single_file, claimed)
        if html:
            body.append(html)
            contents.append(f"<li><a href=\"#{section.key}\">{escape(section.title)}</a></li>")
    other = _other_html(folders, run, single_file, claimed)
    if other:
        body.append(other)
        contents.append("<li><a href=\"#other\">Other results</a></li>")
    body.append(_configuration_html(folders, run))
    body.append(_environment_html(folders))
    contents += ["<li><a href=\"#configuration\">Configuration</a></li>", "<li><a href=\"#environment\">Versions and machine</a></li>"]
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>filterscope · {escape(name)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>filterscope report: {escape(name)}</h1>\n<p class=\"intro\">What this run measured, one section per "
        "analysis, each built from the numbers and figures the run saved.</p>\n"
        f"<nav><ol>{''.join(contents)}</ol></nav>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    target = run / REPORT_NAME
    write_text_atomically(target, page)
    return target


def _label(key: str, folder: RunFolder) -> str:
    return f"{key} ({folder.label}/)" if folder.label else key


def _section_html(section: Section, folders: list[RunFolder], run: Path, single_file: bool, claimed: set) -> str:
    parts = []
    figures = [(f, p) for pattern in section.figures for f in folders for p in f.figures
               if section_of_figure(p.name) is section and fnmatch(p.name, pattern) and (f.path, p.name) not in claimed]
    for folder, path in figures:
        claimed.add((folder.path, path.name))
    if figures:
        parts.append("<div class=\"figures\">" + "".join(_figure_html(p, run, single_file) for _, p in figures) + "</div>")
    for folder in folders:
        for key, value in folder.metrics.items():
            if section_of_key(key) is section:
                claimed.add((folder.path, f"metrics:{key}"))
                parts.append(f"<h3>{escape(_label(key, folder))}</h3>{tables_for(key, value)}")
    if not parts:
        return ""
    return (f"<section id=\"{section.key}\">\n<h2>{escape(section.title)}</h2>\n<p class=\"intro\">{escape(section.intro)}</p>\n"
            + "\n".join(parts) + "\n</section>")


def _figure_html(path: Path, run: Path, single_file: bool) -> str:
    text = figure_text(path.name)
    if single_file:
        source = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        source = escape(path.relative_to(run).as_posix())
    return (f"<figure><img src=\"{source}\" alt=\"{escape(text)}\"><figcaption>{escape(text)} "
            f"<code>{escape(path.relative_to(run).as_posix())}</code></figcaption></figure>")


def _other_html(folders: list[RunFolder], run: Path, single_file: bool, claimed: set) -> str:
    parts = []
    for folder in folders:
        for key, value in folder.metrics.items():
            if (folder.path, f"metrics:{key}") not in claimed:
                parts.append(f"<h3>{escape(_label(key, folder))}</h3>{generic_html(value)}")
        loose = [p for p in folder.figures if (folder.path, p.name) not in claimed]
        if loose:
            parts.append("<div class=\"figures\">" + "".join(_figure_html(p, run, single_file) for p in loose) + "</div>")
    if not parts:
        return ""
    return ("<section id=\"other\">\n<h2>Other results</h2>\n<p class=\"intro\">Numbers and figures the run saved that "
            "no section above describes, shown as saved.</p>\n" + "\n".join(parts) + "\n</section>")


def _configuration_html(folders: list[RunFolder], run: Path) -> str:
    parts = []
    for folder in folders:
        for config in sorted(folder.path.glob("*.yaml")):
            parts.append(f"<details><summary>{escape(config.relative_to(run).as_posix())}</summary>"
                         f"<pre>{escape(config.read_text())}</pre></details>")
        files = [p for sub in ("checkpoints", "arrays") if (folder.path / sub).is_dir() for p in sorted((folder.path / sub).iterdir())
                 if p.is_file()]
        if files:
            parts.append(table_html(("file", "bytes"), [(p.relative_to(run).as_posix(), p.stat().st_size) for p in files]))
    return ("<section id=\"configuration\">\n<h2>Configuration</h2>\n<p class=\"intro\">The settings each verb ran with, "
            "as recorded in the run folder (the command line that repeats a run is in them), and the files it kept.</p>\n"
            + "\n".join(parts) + "\n</section>")


def _environment_html(folders: list[RunFolder]) -> str:
    rows = []
    for folder in folders:
        for verb, record in read_environment(folder.path).items():
            if isinstance(record, dict):
                rows.append((_label(verb, folder), _environment_text(record)))
    now = describe_environment()
    rows.append(("this page (report)", _environment_text(now)))
    note = "" if len(rows) > 1 else (f"<p class=\"note\">The run folder holds no {ENVIRONMENT_NAME} (written by the "
                                     "command-line verbs): the versions of the measuring machine are not known.</p>")
    return ("<section id=\"environment\">\n<h2>Versions and machine</h2>\n<p class=\"intro\">Where the numbers above were "
            "measured: timings and some results depend on these.</p>\n" + note
            + table_html(("verb", "versions and machine"), rows) + "\n</section>")


def _environment_text(record: dict) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in (record.get("packages") or {}).items())
    return (f"{record.get('time_utc', '?')}; Python {record.get('python', '?')}; {packages}; {record.get('platform', '?')}, "
            f"{record.get('cpus', '?')} CPUs, {record.get('torch_threads', '?')} torch threads"
            + (f"; {record['command']}" if record.get("command") else ""))
