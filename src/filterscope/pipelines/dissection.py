"""``filterscope dissect``: dissection scores of a checkpoint's units, decoupled beside dense, into a run directory.

    arrays/dissection_<variant>.npz   per unit, the (filters × concepts) sums (variant: decoupled, dense)
    figures/dissection_*.png          layer scores and detectors, decoupled beside dense
    metrics.json["dissection"]        per layer, both variants' scores side by side, and each variant's summary

The dense variant is, by default, the decoupled checkpoint's own network with its gates taken out
(:func:`filterscope.methods.decoupling.unwrap.base_network`): the same weights, fine-tuned with the gates,
every filter always on. ``dense_weights`` gives another checkpoint of the base architecture instead (e.g.
the pretrained network the decoupling started from). A checkpoint without gates is dissected as dense only.
Each variant's field thresholds are its own, over the same images the dissection reads (as Network
Dissection does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..analyses.colour_names import COLOUR_TERMS
from ..analyses.concept_batches import ConceptBatch, batches_from_broden, batches_from_colours
from ..analyses.dissection import DissectionResult, dissect
from ..analyses.receptive_fields import DEFAULT_QUANTILE, field_thresholds, read_units
from ..core.errors import UserInputError
from ..io.run_dir import RunDir
from .concept_inputs import LoadedModel, load_model, load_split, spread_images

DEFAULT_IMAGES = 1000
COLOUR = "colour"


@dataclass
class DissectionSettings:
    """What ``filterscope dissect`` was asked (see its flags)."""

    weights: str
    data: str | None = None
    split: str = "test"
    concepts: str = COLOUR
    images: int | None = None
    quantile: float = DEFAULT_QUANTILE
    model: str | None = None
    dense_weights: str | None = None
    min_concept_fraction: float = 0.0
    batch_size: int = 100
    device: str = "cpu"
    val_fraction: float = 0.0
    run_dir: str | None = None
    progress: bool = True


def concept_source(settings: DissectionSettings, loaded: LoadedModel) -> tuple[list[str], int, Callable[[], Iterator[ConceptBatch]], str]:
    """(concept names, number of images, a function giving the concept batches afresh, a description)."""
    if settings.concepts == COLOUR:
        if settings.data is None:
            raise UserInputError("--concepts colour names the pixels of --data; pass --data (a data set name or image folder).")
        split = load_split(loaded, settings.data, settings.split, val_fraction=settings.val_fraction)
        count = settings.images if settings.images is not None else min(DEFAULT_IMAGES, len(split))
        dataset, _ = spread_images(split, count, settings.split)
        batches = lambda: batches_from_colours(dataset, len(dataset), settings.batch_size, settings.min_concept_fraction)  # noqa: E731
        return (list(COLOUR_TERMS), len(dataset), batches,
                f"11 colour terms of every pixel of {len(dataset)} images evenly spaced over {settings.data} [{settings.split}]")
    from ..data.broden import BrodenFolder

    folder = BrodenFolder(settings.concepts)
    count = settings.images if settings.images is not None else len(folder)
    if count > len(folder):
        raise UserInputError(f"--images {count} asks for more images than {settings.concepts} lists ({len(folder)}); pass "
                             f"--images {len(folder)} or fewer.")
    batches = lambda: batches_from_broden(folder, count, loaded.input_shape[1:], loaded.mean, loaded.std,  # noqa: E731
                                          settings.batch_size)
    return folder.concept_names(), count, batches, f"BRODEN folder {settings.concepts}"


def variants(settings: DissectionSettings, loaded: LoadedModel) -> dict[str, tuple[nn.Module, str]]:
    """The models to dissect, by variant name, each with a line saying what it is."""
    from ..methods.decoupling.unwrap import base_network
    from ..models import create_model, load_weights

    found: dict[str, tuple[nn.Module, str]] = {}
    if loaded.decoupled:
        found["decoupled"] = (loaded.model, f"{settings.weights} with its gates (evaluation gates)")
    if settings.dense_weights is not None:
        if loaded.model_name is None:
            raise UserInputError("--dense-weights needs a built-in base model; this checkpoint was decoupled from a custom one.")
        dense = load_weights(create_model(loaded.model_name, loaded.num_classes), settings.dense_weights).eval()
        found["dense"] = (dense, f"{settings.dense_weights} (a separate dense checkpoint)")
    elif loaded.decoupled:
        found["dense"] = (base_network(loaded.model).eval(), f"{settings.weights} without its gates (the decoupled "
                          "checkpoint's fine-tuned weights, every filter on)")
    else:
        found["dense"] = (loaded.model, f"{settings.weights} (a checkpoint without gates)")
    return found


def run_dissection(settings: DissectionSettings) -> dict[str, Any]:
    """Dissect every variant of ``settings`` and write the result into its run directory (if any).

    Returns:
        The summary stored under ``metrics.json["dissection"]``, with ``run_dir``.
    """
    from ..core.distributed import resolve_device

    loaded = load_model(settings.weights, need_gates=False, model_name=settings.model, verb="dissection")
    concepts, count, batches, description = concept_source(settings, loaded)
    device = resolve_device(settings.device)
    results: dict[str, DissectionResult] = {}
    descriptions = {}
    for variant, (model, what) in variants(settings, loaded).items():
        model = model.to(device)
        units = read_units(model, loaded.unit_names, loaded.input_shape)
        thresholds = field_thresholds(model, units, (batch.images for batch in batches()), count,
                                      quantile=settings.quantile, device=device)
        results[variant] = dissect(model, units, thresholds, batches(), concepts, device=device)
        descriptions[variant] = what
    summary = dissection_summary(results, descriptions, description, loaded.notice)
    if settings.run_dir is not None:
        write_dissection(results, summary, RunDir(settings.run_dir))
    return {**summary, "run_dir": settings.run_dir}


def dissection_summary(results: dict[str, DissectionResult], descriptions: dict[str, str], concepts: str,
                       notice: str | None) -> dict:
    """Per layer, each variant's score and detectors side by side, then each variant's full summary."""
    summaries = {variant: result.summary() for variant, result in results.items()}
    first = next(iter(results.values()))
    rows = []
    for layer in first.unit_names:
        row: dict[str, Any] = {"layer": layer, "filters": summaries[next(iter(summaries))]["per_layer"][layer]["filters"]}
        for variant, summary in summaries.items():
            values = summary["per_layer"][layer]
            row[f"{variant}_score"] = values["score"]
            row[f"{variant}_score_with_field"] = values["score_over_filters_with_field"]
            row[f"{variant}_filters_with_field"] = values["filters_with_field"]
            row[f"{variant}_detectors"] = values["detectors"]
        rows.append(row)
    return {"concepts": concepts, "num_images": first.num_images, "variants": descriptions,
            **({"notice": notice} if notice else {}), "per_layer": rows, **summaries}


def write_dissection(results: dict[str, DissectionResult], summary: dict, run: RunDir) -> None:
    """Arrays, figures (drawn from the summary) and metrics of one dissection."""
    from ..report import figures_concepts as figures

    for variant, result in results.items():
        result.save(run.arrays / f"dissection_{variant}.npz")
    figures.draw_dissection_layers(summary, run.figures / "dissection_per_layer.png")
    run.update_metrics("dissection", summary)
