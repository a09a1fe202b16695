"""The report's tables: each analysis's saved numbers as HTML tables a reader scans, not raw JSON.

``TABLES`` maps a ``metrics.json`` key to the function that renders it; keys without one are shown by
:func:`generic_html` (scalars as key–value rows, lists of records as a table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatch
from html import escape
from typing import Any

__all__ = ["TABLES", "generic_html", "table_html", "tables_for"]

LONG_LIST = 12  # lists longer than this are summarised (count, min, max) instead of printed in full


def cell(value: Any, digits: int = 4) -> str:
    """One ``<td>``: numbers right-aligned, floats to ``digits`` significant places, None as an empty cell."""
    if value is None:
        return "<td>—</td>"
    if isinstance(value, bool):
        return f"<td>{value}</td>"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"  # 40,330,000 not 4.033e+07
        return f"<td class=\"number\">{text}</td>"
    if isinstance(value, int):
        return f"<td class=\"number\">{value:,}</td>"
    if isinstance(value, list):
        return f"<td>{escape(_list_text(value))}</td>"
    return f"<td>{escape(str(value))}</td>"


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """A table with a header row; cells through :func:`cell` unless already HTML (``"<td"``)."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(v if isinstance(v, str) and v.startswith("<td") else cell(v) for v in row) + "</tr>"
                   for row in rows)
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<tr>{head}</tr>{body}</table>"


def _pairs(mapping: dict, keys: Sequence[tuple[str, str]], caption: str = "") -> str:
    rows = [(label, mapping[key]) for key, label in keys if key in mapping]
    return table_html(("", "value"), rows, caption) if rows else ""


def _list_text(values: list) -> str:
    if len(values) <= LONG_LIST or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        shown = values if len(values) <= LONG_LIST else values[:LONG_LIST] + ["…"]
        return ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in shown)
    return f"{len(values)} values, min {min(values):.4g}, max {max(values):.4g}"


def _per_class(classes: Sequence[str], columns: dict[str, Sequence[float]], caption: str) -> str:
    """One row per measure, one column per class (a long class list wraps in the page's scroll)."""
    if not classes:
        return ""
    rows = [[label] + [values[i] if i < len(values) else None for i in range(len(classes))] for label, values in columns.items()]
    return f"<div class=\"wide\">{table_html(['class', *classes], rows, caption)}</div>"


def model_tables(value: dict) -> str:
    keys = (("model", "model"), ("data", "data"), ("conv_units", "conv units"), ("flops_per_image", "FLOPs per image"),
            ("parameters", "parameters"), ("weights", "weights"), ("test_accuracy", "top-1 (test split)"),
            ("seconds", "wall seconds of the demo"))
    parts = [_pairs(value, keys)]
    steps, seconds = value.get("steps") or {}, value.get("step_seconds") or {}
    if isinstance(steps, dict) and steps:
        parts.append(table_html(("step", "result", "seconds"), [(name, line, seconds.get(name)) for name, line in steps.items()],
                                "Each step's result at a glance (details in the sections below)"))
    return "".join(parts)


def training_tables(value: dict) -> str:
    final = value.get("final", {})
    keys = (("accuracy", "top-1"), ("loss", "loss"), ("split", "evaluated on"), ("num_samples", "images"),
            ("epochs", "epochs"), ("wall_seconds_this_process", "wall seconds (last process)"))
    parts = [_pairs(final, keys, "Final evaluation")]
    parts.append(_per_class(final.get("classes", []), {"top-1": final.get("per_class_accuracy", [])}, "Per class"))
    return "".join(parts)


def decoupling_tables(value: dict) -> str:
    keys = (("accuracy", "top-1 under the evaluation gates"), ("dense_flops", "dense FLOPs per image"),
            ("mean_flops", "mean FLOPs per image under the gates"), ("flops_reduction", "FLOPs reduction (×)"),
            ("energetic_fraction", "energetic share of gated filters"), ("dynamic_fraction", "dynamic share"),
            ("silent_fraction", "silent share"), ("num_samples", "images"), ("epochs", "epochs"))
    parts = [_pairs(value, keys)]
    per_layer, active = value.get("per_layer", {}), value.get("active_fraction_per_layer", {})
    if per_layer:
        rows = [(name, row.get("filters"), row.get("energetic"), row.get("dynamic"), row.get("silent"), active.get(name))
                for name, row in per_layer.items()]
        parts.append(table_html(("layer", "filters", "energetic", "dynamic", "silent", "mean open share"), rows,
                                "Per gated layer"))
    return "".join(parts)


def embedding_tables(value: dict) -> str:
    rows = []
    for name, scores in value.get("representations", {}).items():
        adjusted = [layer["mi_adjusted"] for layer in scores.get("mutual_information", {}).values()]
        rows.append((name, scores.get("dims"), scores.get("knn_accuracy"), scores.get("silhouette_embedding"),
                     scores.get("silhouette_pca"), sum(adjusted) / len(adjusted) if adjusted else None,
                     scores.get("description", "")))
    caption = (f"{value.get('num_inputs', '?')} images; {value.get('knn_neighbours', '?')}-NN scored on "
               f"{value.get('knn_test_inputs', '?')} held out (chance {value.get('knn_chance', 0):.3f})")
    return table_html(("representation", "dims", "k-NN accuracy", "silhouette 2-D", "silhouette PCA",
                       "mean adjusted MI", "what it is"), rows, caption)


def tree_tables(value: dict) -> str:
    parts = [_pairs(value, (("num_inputs", "images"), ("splits", "splits"), ("leaves", "leaves")), "Tree")]
    per_layer = value.get("splits_per_layer", {})
    if per_layer:
        parts.append(table_html(("layer", "splits"), list(per_layer.items()), "Splits per layer"))
    parting = value.get("class_parting", {})
    if parting:
        rows = [(name, row.get("first_parts_at") or "never", ", ".join(row.get("parts_from", []))) for name, row in parting.items()]
        parts.append(table_html(("class", "first parts at", "from"), rows, "Where each class first parts from others"))
    return "".join(parts)


def occlusion_tables(value: dict) -> str:
    rows = [(name, row.get("mean_switched_off"), row.get("single_iou"), row.get("best_single_iou"), row.get("union_iou"),
             row.get("union_over_single"), row.get("stayed_on_iou")) for name, row in value.get("per_layer", {}).items()]
    caption = (f"{value.get('num_images', '?')} images, {value.get('region_fraction', 0):.1%} of each occluded; "
               f"prediction changed for {value.get('prediction_changed', 0):.1%}")
    return table_html(("layer", "filters off per image", "IoU one filter", "IoU best filter", "IoU union",
                       "union / one", "IoU filters that stayed on"), rows, caption)


def dissection_tables(value: dict) -> str:
    records = value.get("per_layer", [])
    if not records:
        return ""
    variants = list(value.get("variants", {}))
    header = ["layer", "filters"] + [f"{v} {what}" for v in variants for what in ("score", "detectors")]
    rows = [[r["layer"], r["filters"]] + [r.get(f"{v}_{what}") for v in variants for what in ("score", "detectors")]
            for r in records]
    return table_html(header, rows, value.get("concepts", ""))


def adversarial_tables(value: dict) -> str:
    parts = []
    attack_rows = []
    for method, splits in value.get("attacks", {}).items():
        for split, row in splits.items():
            attack_rows.append((method, split, row.get("images"), row.get("correct_before"), row.get("successful"),
                                row.get("success_rate")))
    if attack_rows:
        parts.append(table_html(("attack", "split", "images", "correct before", "successful", "success rate"),
                                attack_rows, "Attacks (only successful adversarials enter detection)"))
    features = value.get("features", [])
    grid: dict[tuple, dict] = {}
    for row in value.get("table", []):
        grid.setdefault((f"{row['train_attack']} → {row['test_attack']}", row["classifier"], row["n"]), {})[row["feature"]] = row
    if grid:
        rows = [[*key] + [f"<td class=\"number\">{r[f]['auc_mean']:.3f} ± {r[f]['auc_std']:.3f}</td>" if f in r else None
                          for f in features] for key, r in grid.items()]
        parts.append(table_html(("train → test", "classifier", "n per class", *features), rows,
                                "Detection AUC, mean ± std over runs (the paper's Table 6 layout)"))
    for warning in value.get("warnings", []) + value.get("notes", []):
        parts.append(f"<p class=\"note\">{escape(warning)}</p>")
    return "".join(parts)


def semantic_tables(value: dict) -> str:
    results = value.get("results", [])
    if not results:
        return ""
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        groups.setdefault((row["mode"], str(row["setting"])), []).append(row)
    metrics = ("fraction_direct", "fraction_residual", "recall", "precision", "auc", "accuracy")
    rows = [[mode, setting, len(rs)] + [sum(r[m] for r in rs) / len(rs) for m in metrics] for (mode, setting), rs in groups.items()]
    summary = table_html(("mode", "θ", "classes", "direct share", "residual share", "recall", "precision", "AUC",
                          "overall accuracy"), rows, f"Mean over the classes pruned for (responses at {value.get('where', '?')})")
    full = table_html(("class", "mode", "θ", *metrics, "dead"),
                      [[r["class"], r["mode"], r["setting"], *[r[m] for m in metrics], r["dead"]] for r in results])
    return summary + f"<details><summary>Every class, mode and θ ({len(results)} rows)</summary>{full}</details>"


def influence_tables(value: dict) -> str:
    keys = (("accuracy_full", "top-1, full final layer"), ("accuracy_decomposed", "top-1, decomposed"),
            ("relative_accuracy", "r_A"), ("flops_final_full", "final layer FLOPs, full"),
            ("flops_final_decomposed", "final layer FLOPs, decomposed"), ("num_features", "features"),
            ("jaccard_mean_offdiagonal", "mean Jaccard overlap between classes"))
    parts = [_pairs(value, keys)]
    if value.get("per_class_full"):
        parts.append(_per_class(list(value.get("indices", {})) or [str(i) for i in range(len(value["per_class_full"]))],
                                {"recall, full layer": value["per_class_full"],
                                 "recall, decomposed": value.get("per_class_decomposed", [])}, "Per class"))
    grid = value.get("r_a_grid")
    if isinstance(grid, dict) and grid.get("ks"):
        parts.append(table_html(["k1 \\ k2", *grid["ks"]], [[k1, *row] for k1, row in zip(grid["ks"], grid["values"])],
                                "r_A over k1 (rows) × k2 (columns)"))
    indices = value.get("indices", {})
    if indices:
        parts.append(table_html(("class", "influential features"), [(k, ", ".join(map(str, v))) for k, v in indices.items()],
                                "Index sets"))
    return "".join(parts)


def engine_tables(value: dict) -> str:
    rows = [(r["name"], r.get("accuracy"), r["flops"] / 1e6, r.get("flops_reduction"), r["latency_us"]["median"],
             f"<td class=\"number\">[{r['latency_us']['p10']:.0f}, {r['latency_us']['p90']:.0f}]</td>", r.get("speedup"))
            for r in value.get("rows", [])]
    parts = [table_html(("model", "top-1", "MFLOPs", "FLOPs reduction", "latency µs (median)", "[p10, p90]",
                         "speedup vs faster dense"), rows,
                        f"Batch 1; top-1 and mean FLOPs over {(value.get('settings') or {}).get('eval_images') or 'all the'} "
                        "test images")]
    routes = value.get("routes") or {}
    if routes:
        parts.append(table_html(("route", "gates", "dense executor µs", "executor µs", "ratio"),
                                [(route, ", ".join(t.get("gate_kernels", [])) or "—", t["dense_us"]["median"],
                                  t["executor_us"]["median"], t["dense_us"]["median"] / t["executor_us"]["median"])
                                 for route, t in routes.items()],
                                "Batch 1 per route (median); the executor row's gates: "
                                f"{', '.join(value.get('gate_kernels', [])) or 'none evaluated'}"))
    throughput, settings = value.get("throughput") or {}, value.get("settings") or {}
    if "dense" in throughput:
        dense = throughput["dense"]["median"]
        parts.append(table_html(("model", "images/s (median)", "[p10, p90]", "vs dense"),
                                [(name, t["median"], f"<td class=\"number\">[{t['p10']:.0f}, {t['p90']:.0f}]</td>",
                                  t["median"] / dense) for name, t in throughput.items()],
                                f"Throughput, batch {settings.get('batch_size', '?')}, "
                                f"{settings.get('throughput_threads', '?')} threads"))
    load = (value.get("load_average_start"), value.get("load_average_end"))
    parts.append(f"<p class=\"note\">torch {escape(str(value.get('torch', '?')))} on {escape(str(value.get('platform', '?')))}; "
                 f"load average at start {load[0]}, at end {load[1]}.</p>")
    return "".join(parts)


TABLES: dict[str, Callable[[Any], str]] = {
    "demo": model_tables, "train": training_tables, "decouple": decoupling_tables, "paths_*": decoupling_tables,
    "path_embedding": embedding_tables, "path_tree": tree_tables, "occlusion": occlusion_tables,
    "dissection": dissection_tables, "adversarial": adversarial_tables, "semantic_pruning": semantic_tables,
    "influence": influence_tables, "bench": engine_tables,
}


def tables_for(key: str, value: Any) -> str:
    """The tables of ``metrics.json[key]``; the generic rendering when none is registered or it does not fit."""
    for pattern, render in TABLES.items():
        if fnmatch(key, pattern) and isinstance(value, dict):
            try:
                return render(value)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):  # saved by another version: show it plainly
                break
    return generic_html(value)


def generic_html(value: Any) -> str:
    """Any metrics entry: scalars as key–value rows (nested keys dotted), lists of records as a table."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records_html(value)
    if not isinstance(value, dict):
        return f"<table><tr>{cell(value, 6)}</tr></table>"
    rows, tables = [], []
    for key, item in _flatten(value):
        if isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            tables.append(f"<h4>{escape(key)}</h4>{_records_html(item)}")
        else:
            rows.append(f"<tr><th>{escape(key)}</th>{cell(item, 6)}</tr>")
    return (f"<table>{''.join(rows)}</table>" if rows else "") + "".join(tables)


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
        columns.extend(k for k, v in record.items() if (v is None or isinstance(v, (bool, int, float, str))) and k not in columns)
    return table_html(columns, [[r.get(c) if c in r else "<td></td>" for c in columns] for r in records])
