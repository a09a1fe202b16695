"""report.html of a run directory: its configuration, numbers and figures on one page.

Built only from what the run's verbs wrote (config files, metrics.json, figures/*.png, arrays/,
checkpoints/); nothing is recomputed, so a report can be rebuilt anywhere the folder is copied.
Figures are linked by relative path, so the page and the folder travel together.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..io.run_dir import check_writable, write_text_atomically

REPORT_NAME = "report.html"
LONG_LIST = 12  # lists longer than this are summarised (count, min, max) instead of printed in full

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { display: inline-block; margin: .5em 1em 1em 0; } figure img { max-width: 34em; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
"""


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files and return its path."""
    run = Path(run_dir)
    if run.is_file():
        raise UserInputError(f"{str(run)!r} is a file; pass the folder a filterscope verb wrote (its --run-dir).")
    if not run.is_dir():
        raise UserInputError(f"run directory {str(run)!r} does not exist; pass the folder a filterscope verb wrote (its --run-dir).")
    configs = sorted(run.glob("*.yaml"))
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file() and not configs:
        raise UserInputError(
            f"{str(run)!r} is not a run directory (no metrics.json and no config .yaml in it); "
            "pass the folder a filterscope verb wrote (its --run-dir)."
        )
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except json.JSONDecodeError as error:
        raise UserInputError(f"{metrics_path} is not valid JSON ({error}); re-run the verb that wrote it.") from None
    check_writable(run, what="run directory")  # report.html goes into it: said now, not as an OSError
    parts = [f"<h1>Run {escape(run.resolve().name)}</h1>"]
    for name, value in metrics.items():
        parts.append(f"<h2>{escape(str(name))}</h2>")
        parts.append(_value_html(value))
    parts.append(_figures_html(run))
    parts.append(_files_html(run, "arrays", "Arrays"))
    parts.append(_files_html(run, "checkpoints", "Checkpoints"))
    for config in configs:
        parts.append(f"<h2>{escape(config.name)}</h2><pre>{escape(config.read_text())}</pre>")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>filterscope · {escape(run.resolve().name)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(part for part in parts if part)
        + "\n</body></html>\n"
    )
    target = run / REPORT_NAME
    write_text_atomically(target, page)
    return target


def _scalar_html(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{escape(str(value))}</td>"
    if isinstance(value, float):
        return f"<td class=\"number\">{value:.6g}</td>"
    if isinstance(value, int):
        return f"<td class=\"number\">{value:,}</td>"
    return f"<td>{escape(str(value))}</td>"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _list_text(values: list) -> str:
    """A list of scalars in one cell: in full when short, else its length and range."""
    if len(values) <= LONG_LIST or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        shown = values if len(values) <= LONG_LIST else values[:LONG_LIST] + ["…"]
        return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in shown)
    return f"{len(values)} values, min {min(values):.4g}, max {max(values):.4g}"


def _value_html(value: Any) -> str:
    """A metrics entry: scalars as key–value rows (nested keys dotted), lists of records as a table."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records_html(value)
    if not isinstance(value, dict):
        return f"<table><tr>{_cell(value)}</tr></table>"
    rows, tables = [], []
    for key, item in _flatten(value):
        if isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            tables.append(f"<h3>{escape(key)}</h3>{_records_html(item)}")
        else:
            rows.append(f"<tr><th>{escape(key)}</th>{_cell(item)}</tr>")
    table = f"<table>{''.join(rows)}</table>" if rows else ""
    return table + "".join(tables)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return f"<td>{escape(_list_text(value))}</td>"
    return _scalar_html(value)


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def _records_html(records: list[dict]) -> str:
    """One row per record (e.g. per epoch), one column per scalar field any record has."""
    columns: list[str] = []
    for record in records:
        columns.extend(k for k, v in record.items() if _is_scalar(v) and k not in columns)
    header = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_scalar_html(r[c]) if c in r else "<td></td>" for c in columns) + "</tr>" for r in records
    )
    return f"<table><tr>{header}</tr>{body}</table>"


def _figures_html(run: Path) -> str:
    figures = sorted((run / "figures").glob("*.png")) if (run / "figures").is_dir() else []
    if not figures:
        return ""
    items = "".join(
        f"<figure><img src=\"figures/{escape(f.name)}\" alt=\"{escape(f.stem)}\"><figcaption>{escape(f.name)}</figcaption></figure>"
        for f in figures
    )
    return f"<h2>Figures</h2>{items}"


def _files_html(run: Path, folder: str, title: str) -> str:
    files = sorted(p for p in (run / folder).glob("*") if p.is_file()) if (run / folder).is_dir() else []
    if not files:
        return ""
    rows = "".join(f"<tr><td>{escape(folder)}/{escape(p.name)}</td>{_scalar_html(p.stat().st_size)}</tr>" for p in files)
    return f"<h2>{title}</h2><table><tr><th>file</th><th>bytes</th></tr>{rows}</table>"
