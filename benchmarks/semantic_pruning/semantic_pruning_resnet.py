"""Semantic pruning on the shared CIFAR ResNets (CIFAR-10 JPEG), without retraining.

Accumulated responses come from the JPEG training split (no augmentation, eval mode), once per
model and read-out point, cached in benchmarks/checkpoints/semantic_cache/ (ignored by git).
Pruned networks are evaluated on the whole JPEG test split. Stages, each resumable and each
writing its results as it goes:

    python benchmarks/semantic_pruning/semantic_pruning_resnet.py accumulate --models resnet20   # train-split responses (post, bn, conv)
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py speed --models resnet20        # sweep vs plain throughput, interleaved
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py sweep --models resnet20 --settings 0 0.05 0.25 0.5
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py where --models resnet20        # read-out point comparison (test subset)
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py residual --models resnet20     # DP/RP per layer from each class's own images
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py export --models resnet20       # physically pruned network vs masked
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py report --models resnet20       # JSON, markdown, figures

Read-out point. `accumulate` and `where` take the read-outs to compute or compare from `--where`
(default post, bn, conv). Every other stage (speed, sweep, residual, export, report, and the
report's overlaps and PCA) ranks filters by the one read-out named by `--sweep-where` (default
`post`, which reproduces the committed results as before). Under another read-out the stage caches
and results carry it as a suffix, so they never overwrite the `post` ones:

    python benchmarks/semantic_pruning/semantic_pruning_resnet.py accumulate --models resnet20 --where response
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py sweep --models resnet20 --sweep-where response
    python benchmarks/semantic_pruning/semantic_pruning_resnet.py report --models resnet20 resnet56 --sweep-where response

writes results/semantic_resnet_response.{json,md}, figures results/semantic_*_response_<model>.png, and
includes the hand-written results/semantic_findings_response.md (`post`: semantic_resnet.{json,md},
semantic_*_<model>.png, semantic_findings.md, as before).

All runs use one intra-op thread (--threads) because the development machine has two cores;
run them under `nice -n 19`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, WEIGHTS, results_dir, write_results

from filterscope import find_units
from filterscope.methods.semantic_pruning import (
    DEFAULT_RATIOS,
    AccumulatedResponse,
    accumulate_responses,
    evaluate_masks,
    full_network_reference,
    overlap_matrices,
    response_pca,
    select_pruned,
)
from filterscope.data import load_dataset
from filterscope.models import create_model, model_spec
from filterscope.core.locations import shared_dir

RESULTS = results_dir("semantic_pruning")

CACHE = CHECKPOINTS / "semantic_cache"
SCRIPT = "benchmarks/semantic_pruning/semantic_pruning_resnet.py"  # as the remaining commands name it
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_model(shared: Path, name: str) -> torch.nn.Module:
    return create_model(name, 10, str(shared / "models" / WEIGHTS[name])).eval()


def dataset(shared: Path, name: str, split: str):
    spec = model_spec(name)
    return load_dataset(str(shared / "data" / "cifar10-jpeg.zip"), split, mean=spec.mean, std=spec.std, augment=False)


def test_batches(shared: Path, name: str, batch_size: int, limit_per_class: int | None = None) -> list:
    """The test split as in-memory batches (decoded once), optionally the first images of each class."""
    data = dataset(shared, name, "test")
    loader = DataLoader(data, batch_size=1024, shuffle=False)
    images = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    if limit_per_class is not None:
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:limit_per_class] for c in range(10)]).sort().values
        images, labels = images[keep], labels[keep]
    return [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]


@contextmanager
def locked_json(path: Path, empty):
    """Read ``path`` (or ``empty``) under an exclusive lock and write back what the caller left in it.

    Stages for different models, and sweep shards for different classes, run side by side as
    separate processes on one file each; the lock keeps one from overwriting the other's rows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else empty
        yield data
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(data, indent=None))
        temporary.replace(path)


def suffix(where: str) -> str:
    """How results and stage caches under read-out ``where`` are told apart: none for ``post`` (as before)."""
    return "" if where == "post" else f"_{where}"


def where_flag(where: str) -> str:
    """The command-line flag that repeats a stage under read-out ``where`` (none for the default ``post``)."""
    return "" if where == "post" else f" --sweep-where {where}"


READOUT_TEXT = {
    "post": "post-activation (the signed BatchNorm output for units without an activation of their own)",
    "response": "as the unit's response (after its own activation, the ReLU of its BatchNorm output where it has none)",
    "bn": "after BatchNorm",
    "conv": "at the raw conv output",
}


def response_path(name: str, where: str) -> Path:
    return CACHE / f"{name}-train-{where}.npz"


def load_response(name: str, where: str, units) -> AccumulatedResponse:
    path = response_path(name, where)
    if not path.exists():
        raise SystemExit(f"{path} is missing; run `python benchmarks/semantic_pruning/semantic_pruning_resnet.py accumulate "
                         f"--models {name} --where {where}` first.")
    with np.load(path) as stored:
        if "__order__" not in stored.files:  # raw accumulate_by_class output: convert once
            response = AccumulatedResponse({unit.name: stored[unit.name] for unit in units}, stored["__counts__"], where, CLASSES)
            response.save(path)
            return response
    return AccumulatedResponse.load(path)


# ------------------------------------------------------------------ stages


def stage_accumulate(args) -> None:
    shared = Path(args.shared)
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        model = load_model(shared, name)
        units = find_units(model, (3, 32, 32))
        loader = DataLoader(dataset(shared, name, "train"), batch_size=256, shuffle=False)
        for where in args.where:
            if response_path(name, where).exists() and not args.force:
                print(f"{response_path(name, where)} exists; skipping")
                continue
            start = time.time()
            response = accumulate_responses(model, units, loader, 10, where=where, classes=CLASSES)
            response.save(response_path(name, where))
            print(f"{name} {where}: {time.time() - start:.0f} s")


def stage_speed(args) -> None:
    """Plain evaluation vs the masked sweep on the same images, interleaved (ABAB...)."""
    shared = Path(args.shared)
    record = {}
    for name in args.models:
        model = load_model(shared, name)
        units = find_units(model, (3, 32, 32))
        response = load_response(name, args.sweep_where, units)
        masks = [select_pruned(response, c, 0.25, "lwp") for c in range(args.masks_per_pass)]
        plain_batches = test_batches(shared, name, 256, limit_per_class=args.speed_images // 10)
        masked_batches = test_batches(shared, name, 256 // args.masks_per_pass, limit_per_class=args.speed_images // 10)
        images = sum(len(y) for _, y in plain_batches)
        reference = full_network_reference(model, units, masked_batches, 10, progress=False).response
        plain, masked = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                for x, _ in plain_batches:
                    model(x)
            plain.append(images / (time.perf_counter() - start))
            start = time.perf_counter()
            evaluate_masks(model, units, masked_batches, masks, 10, masks_per_pass=args.masks_per_pass,
                           baseline=reference, progress=False)
            masked.append(images * len(masks) / (time.perf_counter() - start))
        record[name] = {
            "images": images, "masks": len(masks), "plain_batch": 256,
            "masked_batch": f"{256 // args.masks_per_pass} images x {args.masks_per_pass} masks",
            "plain_images_per_s": plain, "sweep_image_masks_per_s": masked,
            "ratio_median": float(np.median(masked) / np.median(plain)),
            "residual_measured": True,
        }
        print(name, json.dumps(record[name]))
        with locked_json(CACHE / f"speed{suffix(args.sweep_where)}.json", {}) as stored:
            stored[name] = record[name]


def sweep_path(name: str, where: str) -> Path:
    return CACHE / f"{name}-sweep-{where}.json"


def stage_sweep(args) -> None:
    """Every class × mode × setting on the full test split, resumable per class."""
    shared = Path(args.shared)
    settings = [float(value) for value in args.settings] if args.settings else list(DEFAULT_RATIOS)
    for name in args.models:
        model = load_model(shared, name)
        units = find_units(model, (3, 32, 32))
        response = load_response(name, args.sweep_where, units)
        batches = test_batches(shared, name, 256 // args.masks_per_pass, limit_per_class=args.test_per_class)
        target = sweep_path(name, args.sweep_where)
        with locked_json(target, {"rows": [], "reference": None}) as stored:
            images = sum(len(y) for _, y in batches)
            if stored.setdefault("test_images", images) != images:
                raise SystemExit(f"{target} holds a sweep over {stored['test_images']} test images, not {images}; "
                                 "pass the same --test-per-class, or delete that file to start a new sweep.")
            if stored["reference"] is None:
                start = time.time()
                reference = full_network_reference(model, units, batches, 10, progress=False)
                stored["reference"] = {
                    "response": {str(c): {k: v.tolist() for k, v in by_unit.items()} for c, by_unit in reference.response.items()},
                    "confusion": reference.confusion.tolist(),
                    "accuracy": float(np.trace(reference.confusion) / reference.confusion.sum()),
                    "logits_path": str(CACHE / f"{name}-test-logits.npz"),
                }
                np.savez(CACHE / f"{name}-test-logits.npz", logits=reference.logits, labels=reference.labels)
                print(f"{name}: full network accuracy {stored['reference']['accuracy']:.4f} ({time.time() - start:.0f} s)")
            baseline = {int(c): {k: np.asarray(v) for k, v in by_unit.items()}
                        for c, by_unit in stored["reference"]["response"].items()}
            done = {(row["class_index"], row["mode"], row["setting"]) for row in stored["rows"]}
        for class_index in args.classes:
            masks = [select_pruned(response, class_index, setting, mode) for mode in ("nwp", "lwp") for setting in settings
                     if (class_index, mode, setting) not in done]
            masks = [mask for mask in masks if mask.num_pruned]  # θ = 0 is read from the reference
            if not masks:
                continue
            start = time.time()
            evaluations = evaluate_masks(model, units, batches, masks, 10, masks_per_pass=args.masks_per_pass,
                                         baseline=baseline, progress=False)
            with locked_json(target, {"rows": [], "reference": None}) as stored:
                stored["rows"] += [evaluation.to_dict() for evaluation in evaluations]
            print(f"{name} {CLASSES[class_index]}: {len(masks)} masks in {time.time() - start:.0f} s", flush=True)


def stage_where(args) -> None:
    """Read-out point comparison: the same ratios ranked by conv, bn and post responses (test subset)."""
    shared = Path(args.shared)
    settings = [0.05, 0.25, 0.5]
    for name in args.models:
        model = load_model(shared, name)
        units = find_units(model, (3, 32, 32))
        batches = test_batches(shared, name, 256 // args.masks_per_pass, limit_per_class=args.where_images // 10)
        reference = full_network_reference(model, units, batches, 10, progress=False)
        record = {"images": sum(len(y) for _, y in batches), "settings": settings, "by_where": {}}
        for where in args.where:
            response = load_response(name, where, units)
            nonpositive = float(np.mean(response.matrix() <= 0))
            masks = [select_pruned(response, c, s, mode) for c in range(10) for mode in ("nwp", "lwp") for s in settings]
            start = time.time()
            rows = [e.to_dict() for e in evaluate_masks(model, units, batches, masks, 10, masks_per_pass=args.masks_per_pass,
                                                        baseline=reference.response, progress=False)]
            zero = [select_pruned(response, c, "0-score", "nwp") for c in range(10)]
            record["by_where"][where] = {
                "share_of_class_filter_scores_nonpositive": nonpositive,
                "zero_score_fraction_pruned_mean": float(np.mean([mask.fraction for mask in zero])),
                "rows": rows,
            }
            print(f"{name} {where}: {time.time() - start:.0f} s, nonpositive {nonpositive:.3f}", flush=True)
        (CACHE / f"{name}-where.json").write_text(json.dumps(record))


def stage_residual(args) -> None:
    """DP and RP per layer at θ = 0.05, 0.25, 0.5 from each class's own test images, at several tolerances.

    RP only needs the target class's images, so each class's masks run on its 1000 test images;
    the per-filter response ratios (under the mask / full network) are kept, and RP is counted
    at ratio 0 (the paper's "becomes zero"), <= 1 % and <= 5 %.
    """
    shared = Path(args.shared)
    tolerances = (0.0, 0.01, 0.05)
    for name in args.models:
        model = load_model(shared, name)
        units = find_units(model, (3, 32, 32))
        response = load_response(name, args.sweep_where, units)
        batches = test_batches(shared, name, 256 // args.masks_per_pass)
        images = torch.cat([x for x, _ in batches])
        labels = torch.cat([y for _, y in batches])
        rows = []
        for class_index in range(10):
            own = images[labels == class_index]
            own_batches = [(own[i:i + 32], torch.full((len(own[i:i + 32]),), class_index)) for i in range(0, len(own), 32)]
            masks = [select_pruned(response, class_index, s, mode) for mode in ("nwp", "lwp") for s in (0.05, 0.25, 0.5)]
            reference = full_network_reference(model, units, own_batches, 10, progress=False).response
            for mask, evaluation in zip(masks, evaluate_masks(model, units, own_batches, masks, 10, masks_per_pass=args.masks_per_pass,
                                                              baseline=reference, progress=False)):
                row = {"class_index": class_index, "mode": mask.mode, "setting": mask.setting,
                       "direct_per_unit": mask.per_unit_fraction, "fraction_direct": mask.fraction}
                for tolerance in tolerances:
                    flags = {u: ~mask.pruned[u] & np.nan_to_num(evaluation.residual_ratio[u], nan=np.inf).__le__(tolerance)
                             for u in mask.pruned}
                    row[f"residual_per_unit@{tolerance}"] = {u: float(f.mean()) for u, f in flags.items()}
                    row[f"fraction_residual@{tolerance}"] = sum(int(f.sum()) for f in flags.values()) / mask.num_filters
                kept_ratios = np.concatenate([evaluation.residual_ratio[u][~mask.pruned[u]] for u in mask.pruned])
                row["kept_response_ratio_quantiles"] = np.nanquantile(kept_ratios, [0.0, 0.01, 0.05, 0.5]).tolist()
                rows.append(row)
            print(f"{name} {CLASSES[class_index]} done", flush=True)
        with locked_json(CACHE / f"residual{suffix(args.sweep_where)}.json", {}) as stored:
            stored[name] = {"tolerances": tolerances, "rows": rows}


def stage_export(args) -> None:
    from filterscope.methods.semantic_pruning.export import check_export, compare_costs, export_pruned

    shared = Path(args.shared)
    for name in args.models:
        model = load_model(shared, name)
        units = find_units(model, (3, 32, 32))
        response = load_response(name, args.sweep_where, units)
        batches = test_batches(shared, name, 500, limit_per_class=100)
        images = torch.cat([x for x, _ in batches])
        rows = []
        for class_name, mode, setting in (("cat", "lwp", 0.25), ("cat", "nwp", 0.5), ("ship", "nwp", 0.25)):
            mask = select_pruned(response, CLASSES.index(class_name), setting, mode)
            exported = export_pruned(model, mask)
            difference = check_export(model, exported, mask, images=images)
            costs = compare_costs(model, exported, mask, repeats=args.latency_repeats, images=images[:64])
            with torch.no_grad():
                agreement = float((model_predictions_masked(model, units, mask, images) == exported(images).argmax(1)).float().mean())
            rows.append({"class": class_name, "mode": mode, "setting": setting, "fraction_pruned": mask.fraction,
                         "max_abs_logit_difference_1000_test_images": difference, "prediction_agreement": agreement,
                         **costs.to_dict()})
            print(name, json.dumps(rows[-1]), flush=True)
        with locked_json(CACHE / f"export{suffix(args.sweep_where)}.json", {}) as stored:
            stored[name] = rows


def model_predictions_masked(model, units, mask, images):
    from filterscope.methods.semantic_pruning import mask_hooks

    keep = {name: torch.tensor(~pruned, dtype=torch.float32) for name, pruned in mask.pruned.items()}
    with torch.no_grad(), mask_hooks(units, keep):
        return model(images).argmax(1)


# ------------------------------------------------------------------ report


def _fmt(value, digits=3):
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def stage_report(args) -> None:
    from filterscope.report import figures_semantic as figures

    where = args.sweep_where
    sfx, flag = suffix(where), where_flag(where)
    results: dict = {"partial": False, "remaining": [], "where": where, "models": {}}
    lines = ["# Semantic pruning on CIFAR-10 JPEG (no retraining)", ""]
    if where != "post":
        lines[0] += f": filters ranked by `{where}`"
        lines += [f"Every filter is ranked by its accumulated response read {READOUT_TEXT[where]}. The same study under "
                  "`post` (the read-out used before): [`semantic_resnet.md`](semantic_resnet.md).", ""]
    # A model whose stage cache (ignored by git) is gone keeps the entry of the committed results,
    # with its figures as they were drawn, so models can be run in different sessions.
    committed_path = RESULTS / f"semantic_resnet{sfx}.json"
    committed = json.loads(committed_path.read_text()).get("models", {}) if committed_path.exists() else {}
    speed_path, export_path = CACHE / f"speed{sfx}.json", CACHE / f"export{sfx}.json"
    speed = json.loads(speed_path.read_text()) if speed_path.exists() else {}
    export = json.loads(export_path.read_text()) if export_path.exists() else {}
    for name in args.models:
        target = sweep_path(name, where)
        if not target.exists() and name in committed:
            print(f"{name}: no stage cache here; keeping its entry from {committed_path.name}")
            entry = committed[name]
            for key, measured in (("speed", speed), ("export", export)):  # stages re-run here replace the committed ones
                if name in measured:
                    entry[key] = measured[name]
            results["models"][name] = entry
            lines += markdown_for(name, entry, entry["settings_evaluated"], where)
            continue
        model = load_model(Path(args.shared), name)
        unit_names = [unit.name for unit in find_units(model, (3, 32, 32))]
        entry: dict = {}
        if not target.exists():
            results["partial"] = True
            results["remaining"].append(f"nice -n 19 python {SCRIPT} sweep --models {name}{flag}")
            continue
        stored = json.loads(target.read_text())
        reference = stored["reference"]
        confusion = np.asarray(reference["confusion"])
        with np.load(reference["logits_path"]) as cached:
            logits, labels = cached["logits"], cached["labels"]
        from filterscope.methods.semantic_pruning import binary_auc

        rows = list(stored["rows"])
        settings = sorted({row["setting"] for row in rows} | {0.0})
        for c in range(10):  # θ = 0 rows from the full network
            predicted = confusion[:, c].sum()
            for mode in ("nwp", "lwp"):
                rows.append({"class_index": c, "setting": 0.0, "mode": mode, "fraction_direct": 0.0, "fraction_residual": 0.0,
                             "recall": confusion[c, c] / confusion[c].sum(), "precision": confusion[c, c] / predicted,
                             "auc": binary_auc(logits[:, c], labels == c), "accuracy": np.trace(confusion) / confusion.sum(),
                             "predicted_share": predicted / confusion.sum(), "direct_per_unit": {}, "residual_per_unit": {},
                             "dead": False, "emptied_units": []})
        rows = [{k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in row.items()} for row in rows]
        full_grid = [round(v, 2) for v in DEFAULT_RATIOS]
        complete = {s for s in settings if s == 0 or sum(r["setting"] == s for r in stored["rows"]) == 20}
        missing = [s for s in full_grid if s not in complete]
        swept = sorted({row["class_index"] for row in stored["rows"]})
        entry["classes_swept"] = [CLASSES[c] for c in swept]
        if len(swept) < 10:  # the sweep stopped between classes: say so, and how to resume it
            results["partial"] = True
            entry["resume"] = f"nice -n 19 python {SCRIPT} sweep --models {name}{flag} --threads 1"
            results["remaining"].append(
                entry["resume"] + f"  # {10 - len(swept)} of 10 classes not yet swept "
                f"({', '.join(c for i, c in enumerate(CLASSES) if i not in swept)}); resumes per class")
        elif missing:
            results["partial"] = True
            results["remaining"].append(
                f"nice -n 19 python {SCRIPT} sweep --models {name}{flag} --settings "
                + " ".join(str(s) for s in full_grid) + f"  # θ {missing} not yet evaluated for every class (resumes per class)")
        entry["settings_evaluated"] = settings
        entry["full_network_accuracy"] = reference["accuracy"]
        entry["test_images"] = stored.get("test_images", int(confusion.sum()))
        entry["rows"] = [{k: v for k, v in row.items() if k not in ("per_class_recall",)} for row in rows]

        # improvements: recall above the full network's at some θ > 0, and whether precision held
        improvements = []
        for c in range(10):
            for mode in ("nwp", "lwp"):
                base = next(r for r in rows if r["class_index"] == c and r["mode"] == mode and r["setting"] == 0)
                better = [r for r in rows if r["class_index"] == c and r["mode"] == mode and r["setting"] > 0
                          and r["recall"] > base["recall"]]
                for r in better:
                    improvements.append({"class": CLASSES[c], "mode": mode, "setting": r["setting"],
                                         "recall": [base["recall"], r["recall"]], "precision": [base["precision"], r["precision"]],
                                         "auc": [base["auc"], r["auc"]], "accuracy": r["accuracy"],
                                         "precision_held": bool(r["precision"] >= base["precision"]),
                                         "auc_held": bool(r["auc"] >= base["auc"])})
        entry["improvements"] = improvements

        # first layer pruned?
        first = unit_names[0]
        entry["first_layer_share_pruned"] = {
            f"{mode}@{s}": float(np.mean([r["direct_per_unit"].get(first, 0.0) for r in rows
                                           if r["mode"] == mode and r["setting"] == s]))
            for mode in ("nwp", "lwp") for s in settings if s > 0
        }
        # DP/RP per layer at 0.05, 0.25, 0.5
        dp_rp = {}
        for mode in ("nwp", "lwp"):
            for s in (0.05, 0.25, 0.5):
                chosen = [r for r in rows if r["mode"] == mode and r["setting"] == s]
                if chosen:
                    dp_rp[f"{mode}@{s}"] = {
                        "direct": float(np.mean([r["fraction_direct"] for r in chosen])),
                        "residual": float(np.mean([r["fraction_residual"] for r in chosen])),
                        "residual_per_unit": {u: float(np.mean([r["residual_per_unit"].get(u, 0.0) for r in chosen])) for u in unit_names},
                        "direct_per_unit": {u: float(np.mean([r["direct_per_unit"].get(u, 0.0) for r in chosen])) for u in unit_names},
                    }
        entry["direct_residual"] = dp_rp

        # figures
        figures.plot_class_curves(rows, CLASSES, RESULTS / f"semantic_curves{sfx}_{name}.png",
                                  title=f"{name}: network pruned for each class (" + ("responses at post-activation)" if where == "post"
                                                                                  else f"read-out: {where})"))
        residual_path = CACHE / f"residual{sfx}.json"
        residual = json.loads(residual_path.read_text()).get(name) if residual_path.exists() else None
        if residual is None:
            results["remaining"].append(f"nice -n 19 python {SCRIPT} residual --models {name}{flag}")
            for mode in ("nwp", "lwp"):
                figures.plot_direct_residual(rows, unit_names, RESULTS / f"semantic_dp_rp_{mode}{sfx}_{name}.png", mode=mode,
                                             title=f"{name}: direct and residual pruning per layer")
        else:
            by_tolerance = {}
            for tolerance in residual["tolerances"]:
                figure_rows = [{**r, "residual_per_unit": r[f"residual_per_unit@{tolerance}"]} for r in residual["rows"]]
                label = "exactly zero" if tolerance == 0 else f"<= {tolerance:.0%} of the full network's"
                tolerance_suffix = "" if tolerance == 0 else f"_tol{tolerance:g}"
                if tolerance in (0.0, 0.01):
                    for mode in ("nwp", "lwp"):
                        figures.plot_direct_residual(figure_rows, unit_names,
                                                     RESULTS / f"semantic_dp_rp_{mode}{tolerance_suffix}{sfx}_{name}.png",
                                                     mode=mode, title=f"{name}: DP and RP per layer (RP: class response {label})")
                by_tolerance[str(tolerance)] = {
                    f"{mode}@{s}": {
                        "direct": float(np.mean([r["fraction_direct"] for r in residual["rows"] if r["mode"] == mode and r["setting"] == s])),
                        "residual": float(np.mean([r[f"fraction_residual@{tolerance}"] for r in residual["rows"]
                                                   if r["mode"] == mode and r["setting"] == s])),
                        "residual_per_unit": {u: float(np.mean([r[f"residual_per_unit@{tolerance}"][u] for r in residual["rows"]
                                                                if r["mode"] == mode and r["setting"] == s])) for u in unit_names},
                    } for mode in ("nwp", "lwp") for s in (0.05, 0.25, 0.5)
                }
            entry["direct_residual_by_tolerance"] = by_tolerance
            entry["kept_response_ratio_quantiles"] = {
                f"{mode}@{s}": np.mean([r["kept_response_ratio_quantiles"] for r in residual["rows"]
                                        if r["mode"] == mode and r["setting"] == s], axis=0).round(4).tolist()
                for mode in ("nwp", "lwp") for s in (0.05, 0.25, 0.5)
            }
        units = find_units(model, (3, 32, 32))
        response = load_response(name, where, units)
        thetas = [s for s in settings if s > 0] or [s for s in full_grid if s > 0]  # overlaps need no sweep
        overlaps = {}
        for mode in ("nwp", "lwp"):
            stack = {"kept": [], "pruned": []}
            for s in thetas:
                matrices = overlap_matrices([select_pruned(response, c, s, mode) for c in range(10)])
                stack["kept"].append(matrices["kept_jaccard"])
                stack["pruned"].append(matrices["pruned_jaccard"])
                if abs(s - 0.25) < 1e-9:
                    figures.plot_overlap_matrix(matrices, CLASSES, RESULTS / f"semantic_overlap_{mode}{sfx}_{name}.png",
                                                title=f"{name} {mode.upper()} θ = 0.25")
                    overlaps[f"{mode}@0.25"] = {k: np.asarray(v).round(4).tolist() for k, v in matrices.items()}
            figures.plot_overlap_curves(thetas, np.stack(stack["kept"]), CLASSES,
                                        RESULTS / f"semantic_overlap_curves_{mode}{sfx}_{name}.png", key="kept",
                                        title=f"{name} {mode.upper()}: kept-set overlap with the most / least overlapping class")
        entry["overlap"] = overlaps
        pca_theta = 0.25 if 0.25 in thetas else thetas[-1]
        coordinates = response_pca(response, [select_pruned(response, c, pca_theta, "nwp") for c in range(10)])
        figures.plot_pca(coordinates, CLASSES, RESULTS / f"semantic_pca{sfx}_{name}.png",
                         title=f"{name}: class response vectors, NWP θ = {pca_theta}")
        entry["pca_nwp"] = {"theta": pca_theta, "coordinates": coordinates.round(4).tolist()}
        where_path = CACHE / f"{name}-where.json"
        if where_path.exists():
            entry["where"] = json.loads(where_path.read_text())
        if name in speed:
            entry["speed"] = speed[name]
        if name in export:
            entry["export"] = export[name]
        results["models"][name] = entry
        lines += markdown_for(name, entry, settings, where)
    # the masks run alike whatever ranked them, so speed is measured once, under post; kept entries keep theirs
    if where == "post" and not speed and not any("speed" in entry for entry in results["models"].values()):
        results["remaining"].append(f"nice -n 19 python {SCRIPT} speed --models resnet20{flag}")
    for other in WEIGHTS:
        if other not in results["models"]:
            results["partial"] = True
            accumulate = "" if where == "post" else f"nice -n 19 python {SCRIPT} accumulate --models {other} --where {where}; "
            stages = "accumulate speed sweep where residual export" if where == "post" else "speed sweep residual export"
            results["remaining"].append(
                f"{accumulate}for stage in {stages}; do nice -n 19 python "
                f"{SCRIPT} $stage --models {other}{flag}; done  # {other} not run yet (about 3x ResNet-20's time)")
    post_path = RESULTS / "semantic_resnet.json"
    if where != "post" and post_path.exists():  # the same study under the read-out used before, side by side
        post_models = json.loads(post_path.read_text()).get("models", {})
        compared = [name for name in results["models"] if name in post_models]
        if compared:
            lines += ["", f"## `post` against `{where}`", "",
                      f"Computed from [`semantic_resnet.json`](semantic_resnet.json) (`post`) and this study's JSON (`{where}`), "
                      f"over the classes swept under `{where}`; networks at θ > 0, both modes.", ""]
        for name in compared:
            units = find_units(load_model(Path(args.shared), name), (3, 32, 32))
            lines += comparison_lines(name, post_models[name], results["models"][name], units, where)
    lines += ["", "## Status", ""]
    report = f"`python {SCRIPT} report --models " + " ".join(WEIGHTS) + f"{flag}`"
    if results["partial"]:
        lines += [f"**Partial results.** Still to run (then {report}):", ""] + [f"    {c}" for c in results["remaining"]]
    elif results["remaining"]:
        lines += [f"The sweep is complete for the models listed. Stages not run under `{where}` (their sections are absent; "
                  f"then {report}):", ""] + [f"    {c}" for c in results["remaining"]]
    else:
        lines += ["Complete for the models listed."]
    findings = RESULTS / f"semantic_findings{sfx}.md"  # hand-written, included as is
    if findings.exists():
        lines += ["", findings.read_text()]
    write_results(f"semantic_resnet{sfx}", results, "\n".join(lines), indent=None, directory=RESULTS)  # per-unit rows of 520 networks: 2.2 MB indented


def headline(entry: dict, units, classes: list[str]) -> dict:
    """The findings' numbers of one model's entry, over ``classes`` only (a partial sweep is compared class for class)."""
    keep = {CLASSES.index(c) for c in classes}
    rows = [r for r in entry["rows"] if r["class_index"] in keep]
    pruned = [r for r in rows if r["setting"] > 0]
    improvements = [i for i in entry["improvements"] if i["class"] in classes]
    out = {
        "networks": len(pruned),
        "improvements": len(improvements),
        "precision_held": sum(i["precision_held"] for i in improvements),
        "auc_held": sum(i["auc_held"] for i in improvements),
        "improvements_accuracy_below_0.2": sum(i["accuracy"] < 0.2 for i in improvements),
        "improvements_accuracy_at_least_0.5": sum(i["accuracy"] >= 0.5 for i in improvements),
        "always_c": sum(r["predicted_share"] >= 0.9 for r in pruned),
        "first_nwp_theta_pruning_conv1": None,
    }
    for mode in ("nwp", "lwp"):
        for s in (0.05, 0.1, 0.25, 0.6):
            chosen = [r for r in rows if r["mode"] == mode and r["setting"] == s]
            if chosen:
                out[f"{mode}@{s}"] = {k: float(np.nanmean([r[k] for r in chosen]))
                                      for k in ("recall", "precision", "auc", "accuracy", "fraction_residual")}
    first, filters = units[0].name, {u.name: u.out_channels for u in units}
    without_activation = [u.name for u in units if u.activation is None]
    for s in sorted({r["setting"] for r in rows if r["mode"] == "nwp" and r["setting"] > 0}):
        if np.mean([r["direct_per_unit"].get(first, 0.0) for r in rows if r["mode"] == "nwp" and r["setting"] == s]) > 0:
            out["first_nwp_theta_pruning_conv1"] = s
            break
    for s in (0.05, 0.25):
        chosen = [r for r in rows if r["mode"] == "nwp" and r["setting"] == s]
        if chosen:
            out[f"nwp@{s}_share_in_units_without_activation"] = float(np.mean([
                sum(r["direct_per_unit"].get(u, 0.0) * filters[u] for u in without_activation)
                / max(1e-12, sum(r["direct_per_unit"].get(u, 0.0) * filters[u] for u in filters)) for r in chosen]))
    for key, values in entry.get("direct_residual_by_tolerance", {}).get("0.0", {}).items():  # residual stage: all classes
        out[f"rp_{key}"] = (values["residual"], entry["direct_residual_by_tolerance"]["0.05"][key]["residual"])
    for key, matrices in entry["overlap"].items():
        jaccard = np.asarray(matrices["kept_jaccard"], dtype=float)
        np.fill_diagonal(jaccard, np.nan)
        out[f"jaccard_{key}"] = (float(np.nanmean(np.nanmax(jaccard, axis=1))), float(np.nanmean(np.nanmin(jaccard, axis=1))))
        out[f"nearest_{key}"] = [CLASSES[int(j)] for j in np.nanargmax(jaccard, axis=1)]
    return out


def comparison_lines(name: str, post: dict, entry: dict, units, where: str) -> list[str]:
    """One model's findings under ``post`` and under ``where``, side by side."""
    classes = entry.get("classes_swept", CLASSES)
    a, b = headline(post, units, classes), headline(entry, units, classes)
    partial = "" if len(classes) == len(CLASSES) else f" ({len(classes)} of 10 classes: {', '.join(classes)})"
    lines = [f"### {name}{partial}", "", f"| | `post` | `{where}` |", "|---|---|---|",
             f"| pruned networks compared | {a['networks']} | {b['networks']} |",
             f"| (class, mode, θ) cases whose recall rises | {a['improvements']} | {b['improvements']} |",
             f"| … of them keeping precision / AUC | {a['precision_held']} / {a['auc_held']} | {b['precision_held']} / {b['auc_held']} |",
             f"| … of them with overall accuracy < 0.2 / >= 0.5 | {a['improvements_accuracy_below_0.2']} / "
             f"{a['improvements_accuracy_at_least_0.5']} | {b['improvements_accuracy_below_0.2']} / {b['improvements_accuracy_at_least_0.5']} |",
             f"| networks predicting the class for >= 90 % of images | {a['always_c']} | {b['always_c']} |"]
    for key in ("nwp@0.05", "nwp@0.1", "nwp@0.25", "lwp@0.05", "lwp@0.1", "lwp@0.25"):
        if key in a and key in b:
            lines.append(f"| {key.replace('@', ' θ ')}: recall / precision / AUC / overall acc. | "
                         + " | ".join(" / ".join(_fmt(x[key][k]) for k in ("recall", "precision", "auc", "accuracy")) for x in (a, b)) + " |")
    for key in ("nwp@0.6", "lwp@0.6"):
        if key in a and key in b:
            lines.append(f"| {key.replace('@', ' θ ')}: mean AUC / overall acc. | "
                         + " | ".join(f"{_fmt(x[key]['auc'])} / {_fmt(x[key]['accuracy'])}" for x in (a, b)) + " |")
    lines.append(f"| first NWP θ that prunes `{units[0].name}` | {a['first_nwp_theta_pruning_conv1']} | {b['first_nwp_theta_pruning_conv1']} |")
    for s in (0.05, 0.25):
        key = f"nwp@{s}_share_in_units_without_activation"
        if key in a and key in b:
            lines.append(f"| NWP θ {s}: share of pruned filters in units without their own activation (blocks' last conv) | "
                         f"{_fmt(a[key])} | {_fmt(b[key])} |")
    for key in ("nwp@0.05", "nwp@0.25"):
        if key in a and key in b:
            lines.append(f"| {key.replace('@', ' θ ')}: mean RP (test split) | {a[key]['fraction_residual']:.4f} | {b[key]['fraction_residual']:.4f} |")
    for key in ("nwp@0.5", "lwp@0.5"):
        if f"rp_{key}" in a and f"rp_{key}" in b:
            lines.append(f"| {key.replace('@', ' θ ')}: RP on each class's own test images, = 0 / <= 5 % of the full network's "
                         "(mean, all 10 classes) | " + " | ".join(f"{x[f'rp_{key}'][0]:.4f} / {x[f'rp_{key}'][1]:.4f}" for x in (a, b)) + " |")
    for key in ("nwp@0.25", "lwp@0.25"):
        if f"jaccard_{key}" in a and f"jaccard_{key}" in b:
            lines.append(f"| {key.replace('@', ' θ ')}: kept-set Jaccard with the most / least overlapping class (mean, all 10 classes) | "
                         + " | ".join(f"{x[f'jaccard_{key}'][0]:.3f} / {x[f'jaccard_{key}'][1]:.3f}" for x in (a, b)) + " |")
            same = sum(p == q for p, q in zip(a[f"nearest_{key}"], b[f"nearest_{key}"]))
            lines.append(f"| {key.replace('@', ' θ ')}: most overlapping class per class | "
                         + " | ".join(", ".join(f"{c}–{n}" for c, n in zip(CLASSES, x[f"nearest_{key}"])) for x in (a, b))
                         + f" |\n| … the same class under both | {same} of 10 | |")
    return lines + [""]


def markdown_for(name: str, entry: dict, settings: list[float], where: str = "post") -> list[str]:
    rows = entry["rows"]
    sfx = suffix(where)
    images = entry.get("test_images", 10_000)  # entries written before the count was recorded used the whole split
    split = "the whole test split" if images == 10_000 else f"the first {images // 10} test images of each class ({images} images)"
    readout = "post-activation" if where == "post" else READOUT_TEXT[where]
    lines = [f"## {name}", "", f"Pruned networks evaluated on {split}. Full network: accuracy {entry['full_network_accuracy']:.4f} there; "
             f"θ evaluated: {', '.join(str(s) for s in settings)}; responses read {readout} (train split).", ""]
    swept = entry.get("classes_swept", CLASSES)
    if len(swept) < len(CLASSES):
        lines += [f"**Partial: {len(swept)} of {len(CLASSES)} classes swept** ({', '.join(swept)}); every mean, count and "
                  f"figure below covers those classes only. Resume the sweep (it skips what is done) with", "",
                  f"    {entry['resume']}", "", "then run the report again.", ""]
    if "speed" in entry:
        sp = entry["speed"]
        lines += [f"**Speed** ({sp['images']} test images, {sp['masks']} masks per pass, residual pruning measured, "
                  f"1 thread): plain evaluation {np.median(sp['plain_images_per_s']):.0f} images/s, sweep "
                  f"{np.median(sp['sweep_image_masks_per_s']):.0f} image×masks/s: ratio **{sp['ratio_median']:.3f}** of the "
                  f"medians (each repeat, plain then sweep: "
                  + ", ".join(f"{m / p:.2f}" for p, m in zip(sp['plain_images_per_s'], sp['sweep_image_masks_per_s'])) + ").", ""]
    lines += [f"Mean over the {len(swept)} classes{'' if len(swept) == len(CLASSES) else ' swept'}, network pruned for each "
              "class, scores for that class:", "",
              "| mode | θ | classes | DP | RP | recall | precision | AUC | overall acc. | predicted share |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("nwp", "lwp"):
        for s in settings:
            chosen = [r for r in rows if r["mode"] == mode and r["setting"] == s]
            if not chosen:
                continue
            mean = {k: float(np.nanmean([r[k] for r in chosen])) for k in
                    ("fraction_direct", "fraction_residual", "recall", "precision", "auc", "accuracy", "predicted_share")}
            lines.append(f"| {mode} | {s} | {len(chosen)} | {_fmt(mean['fraction_direct'])} | {_fmt(mean['fraction_residual'])} | "
                         f"{_fmt(mean['recall'])} | {_fmt(mean['precision'])} | {_fmt(mean['auc'])} | "
                         f"{_fmt(mean['accuracy'])} | {_fmt(mean['predicted_share'])} |")
    lines += ["", "Per class, recall / precision / AUC (NWP | LWP):", "",
              "| class | " + " | ".join(f"θ={s}" for s in settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for c, class_name in enumerate(CLASSES):
        cells = []
        for s in settings:
            parts = []
            for mode in ("nwp", "lwp"):
                r = next((r for r in rows if r["class_index"] == c and r["mode"] == mode and r["setting"] == s), None)
                parts.append("–" if r is None else f"{_fmt(r['recall'], 2)}/{_fmt(r['precision'], 2)}/{_fmt(r['auc'], 2)}")
            cells.append(" \\| ".join(parts))
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    improvements = entry["improvements"]
    lines += ["", f"**Classes whose recall improves at some θ > 0**: {len(improvements)} (class, mode, θ) cases; "
              f"precision held in {sum(i['precision_held'] for i in improvements)}, AUC held in "
              f"{sum(i['auc_held'] for i in improvements)}.", ""]
    usable = [i for i in improvements if i["accuracy"] >= 0.5]
    if improvements:
        lines += [f"{sum(i['accuracy'] < 0.2 for i in improvements)} of them have overall accuracy below 0.2 (the network "
                  f"predicts the class for almost every image); the {len(usable)} with overall accuracy >= 0.5:", ""]
    if usable:
        lines += ["| class | mode | θ | recall | precision | AUC | overall acc. |", "|---|---|---|---|---|---|---|"]
        for i in usable:
            lines.append(f"| {i['class']} | {i['mode']} | {i['setting']} | {_fmt(i['recall'][0])} → {_fmt(i['recall'][1])} | "
                         f"{_fmt(i['precision'][0])} → {_fmt(i['precision'][1])} | {_fmt(i['auc'][0])} → {_fmt(i['auc'][1])} | "
                         f"{_fmt(i['accuracy'])} |")
    lines += ["", "**First layer (`conv1`) share pruned**, mean over classes: "
              + ", ".join(f"{k} {v:.3f}" for k, v in entry["first_layer_share_pruned"].items()), ""]
    if "direct_residual_by_tolerance" in entry:
        table = entry["direct_residual_by_tolerance"]
        keys = list(next(iter(table.values())))
        lines += ["**Direct / residual pruning** (share of all filters, mean over classes; RP measured on each class's own "
                  "1000 test images: a filter not pruned directly whose summed response for the class is zero, or at most "
                  "1 % / 5 % of its full-network response):", "",
                  "| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
                  "| DP | " + " | ".join(f"{table['0.0'][k]['direct']:.3f}" for k in keys) + " |"]
        for tolerance, values in table.items():
            label = "RP (= 0)" if float(tolerance) == 0 else f"RP (<= {float(tolerance):.0%})"
            lines.append(f"| {label} | " + " | ".join(f"{values[k]['residual']:.4f}" for k in keys) + " |")
        quantiles = entry["kept_response_ratio_quantiles"]
        lines += ["", "Kept filters' class response under the mask relative to the full network (min, 1 %, 5 %, median quantile; mean over classes): "
                  + "; ".join(f"{k}: {', '.join(f'{q:.3f}' for q in v)}" for k, v in quantiles.items()), ""]
    elif entry["direct_residual"]:
        lines += ["**Direct / residual pruning** (share of all filters, mean over classes): "
                  + "; ".join(f"{k}: DP {v['direct']:.3f}, RP {v['residual']:.4f}" for k, v in entry["direct_residual"].items()), ""]
    if "where" in entry:
        w = entry["where"]
        lines += [f"**Read-out point** ({w['images']} test images, 100 per class; mean over classes and modes):", "",
                  "| where | class-filter scores <= 0 | 0-score prunes | " + " | ".join(f"recall θ={s}" for s in w["settings"])
                  + " | " + " | ".join(f"overall acc. θ={s}" for s in w["settings"]) + " |",
                  "|---|---|---|" + "---|" * (2 * len(w["settings"]))]
        for where, data in w["by_where"].items():
            recall = [np.mean([r["recall"] for r in data["rows"] if r["setting"] == s]) for s in w["settings"]]
            accuracy = [np.mean([r["accuracy"] for r in data["rows"] if r["setting"] == s]) for s in w["settings"]]
            lines.append(f"| {where} | {data['share_of_class_filter_scores_nonpositive']:.3f} | "
                         f"{data['zero_score_fraction_pruned_mean']:.3f} | " + " | ".join(f"{v:.3f}" for v in recall)
                         + " | " + " | ".join(f"{v:.3f}" for v in accuracy) + " |")
        lines.append("")
    if "export" in entry:
        lines += ["**Export** (physically pruned network vs the masked one; 1000 test images; batch-1 latency, 1 thread):", "",
                  "| class | mode | θ | pruned | max |Δlogit| | same prediction | FLOPs full → exported | params full → exported | latency ms full → exported |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in entry["export"]:
            lines.append(f"| {r['class']} | {r['mode']} | {r['setting']} | {r['fraction_pruned']:.3f} | "
                         f"{r['max_abs_logit_difference_1000_test_images']:.2e} | {r['prediction_agreement']:.4f} | "
                         f"{r['flops_full'] / 1e6:.1f}M → {r['flops_exported'] / 1e6:.1f}M | {r['params_full']:,} → {r['params_exported']:,} | "
                         f"{r['latency_full_ms']:.2f} → {r['latency_exported_ms']:.2f} |")
        lines.append("")
    lines += [f"Figures: `semantic_curves{sfx}_{name}.png`, `semantic_dp_rp_{{nwp,lwp}}[_tol0.01]{sfx}_{name}.png`, "
              f"`semantic_overlap_{{nwp,lwp}}{sfx}_{name}.png`, `semantic_overlap_curves_{{nwp,lwp}}{sfx}_{name}.png`, "
              f"`semantic_pca{sfx}_{name}.png`.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("accumulate", "speed", "sweep", "where", "residual", "export", "report"))
    parser.add_argument("--shared", default=str(shared_dir()))
    parser.add_argument("--models", nargs="+", default=["resnet20"])
    parser.add_argument("--where", nargs="+", default=["post", "bn", "conv"])
    parser.add_argument("--sweep-where", default="post",
                        help="the read-out every stage but accumulate/where ranks filters by; results under another "
                             "read-out than post carry it as a suffix (semantic_resnet_<where>.md, semantic_*_<where>_<model>.png)")
    parser.add_argument("--settings", nargs="+", default=None, help="sweep: θ values (default 0 … 0.6)")
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)),
                        help="sweep: class indices to evaluate (shards can run side by side, one per process)")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="sweep: evaluate on the first N test images of each class (default: the whole test split)")
    parser.add_argument("--masks-per-pass", type=int, default=8)
    parser.add_argument("--speed-images", type=int, default=2000)
    parser.add_argument("--where-images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"accumulate": stage_accumulate, "speed": stage_speed, "sweep": stage_sweep, "where": stage_where,
     "residual": stage_residual, "export": stage_export, "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    main()
