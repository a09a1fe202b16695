"""Occlusion concept analysis and colour dissection of the shipped decoupled ResNet-20 (CIFAR-10 JPEG test split).

Occlusion (the paper's Figs. 6-8): a centre box (default 16×16, a quarter of the image) is filled black, and
with the images' mean, on 100 test images evenly spaced over the split (10 per class); per gated layer and
per stage, the filters switched off, the mean IoU of their receptive fields with the box (single filter),
the best single filter's, and that of their union; beside it, the IoU of the filters that stayed on.

Dissection (Table 1): the 11 colour terms of every pixel (filterscope.analyses.colour_names) of the first
--dissect-images images evenly spaced over the test split, for the decoupled model, the same checkpoint
without gates (its fine-tuned weights, every filter on) and the pretrained dense ResNet-20 it was decoupled
from. Control: the same fields scored against the colour masks of *other* images (masks rotated by one
image), the score a filter gets without reading colour.

    python benchmarks/concepts/concepts_resnet20.py --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py, shared by every study
from common import CHECKPOINTS, WEIGHTS, results_dir, write_results

from filterscope.analyses.colour_names import COLOUR_TERMS
from filterscope.analyses.concept_batches import ConceptBatch, batches_from_colours
from filterscope.analyses.dissection import dissect
from filterscope.analyses.receptive_fields import field_thresholds, read_units
from filterscope.core.locations import shared_dir
from filterscope.methods.decoupling import load_decoupled
from filterscope.methods.decoupling.unwrap import base_network
from filterscope.models import create_model, load_weights
from filterscope.pipelines.concept_inputs import LoadedModel, load_split, spread_images
from filterscope.pipelines.occlusion import OcclusionSettings, run_occlusion
from filterscope.report.figures_concepts import draw_dissection_layers

RESULTS = results_dir("concepts")
REPOSITORY = Path(__file__).resolve().parents[2]
STAGES = ("layer1", "layer2", "layer3")


def stage_of(layer: str) -> str:
    return layer.split(".")[0]


def occlusion_per_stage(arrays_path: Path, layers: list[str]) -> dict:
    """Per stage: single-filter IoU over every switched-off (image, filter) pair of its layers, best single and
    union IoU over the (image, layer) pairs with any switched off, the stayed-on filters' IoU, filters off per image."""
    stages = {}
    with np.load(arrays_path) as arrays:
        union = arrays["union_iou"]
        for stage in STAGES:
            indices = [i for i, name in enumerate(layers) if stage_of(name) == stage]
            off = [arrays[f"{layers[i]}/switched_off"] for i in indices]
            iou = [arrays[f"{layers[i]}/single_iou"] for i in indices]
            before = [arrays[f"{layers[i]}/on_before"] for i in indices]
            single = np.concatenate([v[o] for v, o in zip(iou, off)])
            best = np.concatenate([np.where(o, v, -1).max(1)[o.any(1)] for v, o in zip(iou, off)])
            unions = np.concatenate([union[o.any(1), i] for i, o in zip(indices, off)])
            stayed = np.concatenate([v[b & ~o] for v, b, o in zip(iou, before, off)])
            mean = lambda values: float(values.mean()) if values.size else float("nan")  # noqa: E731
            stages[stage] = {"switched_off_per_image": float(sum(o.sum() for o in off) / len(union)),
                             "switched_off_pairs": int(single.size), "single_iou": mean(single),
                             "best_single_iou": mean(best), "union_iou": mean(unions),
                             "union_over_single": mean(unions) / mean(single) if single.size and mean(single) > 0 else float("nan"),
                             "stayed_on_iou": mean(stayed)}
    return stages


def run_occlusions(args, run_root: Path) -> dict:
    results = {}
    for fill in ("black", "mean"):
        run_dir = run_root / f"occlusion_{fill}"
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.time()
        summary = run_occlusion(OcclusionSettings(
            weights=str(args.weights), data=str(args.data), split="test", images=args.occlusion_images, box=tuple(args.box),
            fill=fill, quantile_images=args.quantile_images, batch_size=100, run_dir=str(run_dir), progress=False))
        layers = list(summary["per_layer"])
        results[fill] = {"seconds": time.time() - started, "fill_values": summary["fill"],
                         "prediction_changed": summary["prediction_changed"], "per_layer": summary["per_layer"],
                         "per_stage": occlusion_per_stage(run_dir / "arrays" / "occlusion.npz", layers)}
        shutil.copy(run_dir / "figures" / "occlusion_examples.png", RESULTS / f"occlusion_examples_{fill}.png")
    return results


def rotated(batches) -> list[ConceptBatch]:
    """The same batches with every image's masks taken from the next image (the last from the first)."""
    batches = list(batches)
    masks = np.concatenate([batch.masks for batch in batches])
    masks = np.roll(masks, -1, axis=0)
    out, start = [], 0
    for batch in batches:
        out.append(ConceptBatch(batch.images, masks[start:start + len(batch.images)]))
        start += len(batch.images)
    return out


def dissect_variant(model, names, input_shape, dataset, count: int) -> dict:
    units = read_units(model, names, input_shape)
    batches = list(batches_from_colours(dataset, count, 100))
    thresholds = field_thresholds(model, units, (b.images for b in batches), count)
    real = dissect(model, units, thresholds, batches, COLOUR_TERMS).summary()
    control = dissect(model, units, thresholds, rotated(batches), COLOUR_TERMS).summary()
    per_layer = {}
    for name in names:
        layer, shuffled = real["per_layer"][name], control["per_layer"][name]
        per_layer[name] = {key: layer[key] for key in ("filters", "score", "filters_with_field",
                                                       "score_over_filters_with_field", "detectors", "detected_concepts",
                                                       "filter_score", "filter_concept")}
        per_layer[name]["shuffled_score"] = shuffled["score"]
        per_layer[name]["shuffled_detectors"] = shuffled["detectors"]
    per_stage = {}
    for stage in STAGES:
        layers = [per_layer[n] for n in names if stage_of(n) == stage]
        scores = np.concatenate([layer["filter_score"] for layer in layers])
        per_stage[stage] = {"filters": int(scores.size), "score": float(scores.mean()),
                            "filters_with_field": int(sum(layer["filters_with_field"] for layer in layers)),
                            "shuffled_score": float(np.average([l["shuffled_score"] for l in layers],
                                                               weights=[l["filters"] for l in layers])),
                            "detectors": int(sum(layer["detectors"] for layer in layers))}
    return {"images_containing": real["images_containing"], "per_layer": per_layer, "per_stage": per_stage}


def run_dissections(args) -> dict:
    decoupled = load_decoupled(args.weights).eval()
    loaded = LoadedModel(decoupled, True, list(decoupled.gated_units), tuple(decoupled.input_shape),
                         tuple(decoupled.input_mean), tuple(decoupled.input_std), decoupled.num_classes, "resnet20")
    dataset, _ = spread_images(load_split(loaded, str(args.data), "test"), args.dissect_images, "test")
    pretrained = load_weights(create_model("resnet20", 10), args.dense_weights).eval()
    models = {"decoupled": decoupled, "dense (same weights, no gates)": base_network(decoupled).eval(),
              "dense (pretrained)": pretrained}
    results = {}
    for variant, model in models.items():
        started = time.time()
        results[variant] = dissect_variant(model, loaded.unit_names, loaded.input_shape, dataset, len(dataset))
        results[variant]["seconds"] = time.time() - started
    return results


def tables(occlusion: dict, dissection: dict, args) -> str:
    lines = ["# Concepts of the decoupled ResNet-20 (resnet20-cifar10-2x-seed1, CIFAR-10 JPEG test split)", "",
             f"## Occlusion: centre box {tuple(args.box)}, {args.occlusion_images} test images (10 per class)", "",
             "| fill | stage | filters off / image | single-filter IoU | best single | union IoU | union / single | stayed-on IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for fill, values in occlusion.items():
        for stage, row in values["per_stage"].items():
            lines.append(f"| {fill} | {stage} | {row['switched_off_per_image']:.2f} | {row['single_iou']:.4f} | "
                         f"{row['best_single_iou']:.4f} | {row['union_iou']:.4f} | {row['union_over_single']:.2f} | "
                         f"{row['stayed_on_iou']:.4f} |")
    lines += ["", "Per gated layer (fill black):", "", "| layer | on before | off / image | single | best | union | stayed on |",
              "|---|---|---|---|---|---|---|"]
    for name, row in occlusion["black"]["per_layer"].items():
        lines.append(f"| {name} | {row['mean_on_before']:.1f} | {row['mean_switched_off']:.2f} | {row['single_iou']:.4f} | "
                     f"{row['best_single_iou']:.4f} | {row['union_iou']:.4f} | {row['stayed_on_iou']:.4f} |")
    variants = list(dissection)
    lines += ["", f"## Colour dissection, {args.dissect_images} test images (evenly spaced), 11 colour terms", "",
              "Score: mean over the layer's filters of max_t P_{f,t}; in brackets, over the filters with any field; "
              "control: masks of the next image; det.: Network Dissection detectors (IoU > 0.04).", "",
              "| layer | " + " | ".join(f"{v} score | control | det." for v in variants) + " |",
              "|---|" + "---|---|---|" * len(variants)]
    first = dissection[variants[0]]["per_layer"]
    for name in first:
        cells = []
        for variant in variants:
            row = dissection[variant]["per_layer"][name]
            cells.append(f"{row['score']:.3f} ({row['score_over_filters_with_field']:.3f}, {row['filters_with_field']}/"
                         f"{row['filters']}) | {row['shuffled_score']:.3f} | {row['detectors']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=REPOSITORY / "checkpoints" / "resnet20-cifar10-2x-seed1.pt", type=Path)
    parser.add_argument("--dense-weights", default=shared_dir() / "models" / WEIGHTS["resnet20"], type=Path)
    parser.add_argument("--data", default=shared_dir() / "data" / "cifar10-jpeg.zip", type=Path)
    parser.add_argument("--box", type=int, nargs=4, default=[8, 8, 24, 24])
    parser.add_argument("--occlusion-images", type=int, default=100)
    parser.add_argument("--quantile-images", type=int, default=1000)
    parser.add_argument("--dissect-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    run_root = CHECKPOINTS / "concepts_resnet20"
    occlusion = run_occlusions(args, run_root)
    dissection = run_dissections(args)
    summary_rows = [{"layer": name, "filters": dissection["decoupled"]["per_layer"][name]["filters"],
                     **{f"{variant}_score": values["per_layer"][name]["score"] for variant, values in dissection.items()},
                     **{f"{variant}_detectors": values["per_layer"][name]["detectors"] for variant, values in dissection.items()}}
                    for name in dissection["decoupled"]["per_layer"]]
    draw_dissection_layers({"per_layer": summary_rows, "variants": {v: v for v in dissection}, "num_images": args.dissect_images,
                            "concepts": "11 colour terms"}, RESULTS / "dissection_per_layer.png")
    table = tables(occlusion, dissection, args)
    settings = {"weights": str(args.weights.relative_to(REPOSITORY)), "dense_weights": args.dense_weights.name,
                "box": list(args.box), "occlusion_images": args.occlusion_images, "quantile": 0.995,
                "quantile_images": args.quantile_images, "dissect_images": args.dissect_images, "threads": args.threads}
    write_results("concepts_resnet20", {"settings": settings, "occlusion": occlusion, "dissection": dissection}, table,
                  directory=RESULTS)
    print(table)


if __name__ == "__main__":
    main()
