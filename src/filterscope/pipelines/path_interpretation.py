"""Path embedding and Hopkins decision tree of a decoupled checkpoint, written into a run directory.

What ``filterscope embed`` and ``filterscope tree`` run: load the decoupled checkpoint (and, for the
embedding, its dense network: the same weights without gates, or ``dense_weights``), take a seeded
sample of one split of the data, run the analysis and write

    metrics.json["path_embedding"]      k-NN accuracy, silhouettes, mutual information per layer, per representation
    arrays/path_embedding.npz           the sampled input indices, labels, each 2-D embedding
    figures/path_embedding.png

    metrics.json["path_tree"]           splits, leaves, where each class first parts
    arrays/path_tree.json               the whole tree and each class's majority path
    arrays/path_tree.npz                the sampled input indices, labels, the pairwise parting layers
    figures/path_tree.png, figures/class_parting.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analyses.hopkins_tree import HopkinsTreeConfig, hopkins_tree
from ..analyses.path_embedding import PathEmbeddingConfig, path_embedding
from ..core.errors import UserInputError
from ..io.run_dir import RunDir, write_text_atomically
from ..methods.decoupling.checkpoint import DECOUPLED_FORMAT
from ..methods.decoupling.model import DecoupledModel
from .paths import checkpoint_of

#: Inputs sampled from the split when no number is given (t-SNE of 2,000 inputs takes well under a minute).
DEFAULT_SAMPLES = 2000


@dataclass
class PathAnalysisSettings:
    """Where the inputs come from and where the results go, for ``embed`` and ``tree``.

    Attributes:
        weights: a decoupled checkpoint (or a ``filterscope decouple`` run directory).
        data, split, val_fraction: the images (see :func:`filterscope.load_dataset`).
        samples: inputs drawn from the split (seeded, without replacement); None: the whole split, at most
            :data:`DEFAULT_SAMPLES`.
        seed: seeds the sample (the analyses take their own seed from their config).
        dense_weights: a plain checkpoint of the same architecture for the embedding's dense baselines;
            None: the decoupled checkpoint's own weights without its gates.
        run_dir: where to write; None writes nothing.
    """

    weights: str
    data: str
    split: str = "test"
    samples: int | None = None
    seed: int = 0
    val_fraction: float = 0.0
    batch_size: int = 256
    device: str = "cpu"
    dense_weights: str | None = None
    run_dir: str | None = None
    progress: bool = True


def load_gated_model(weights: str) -> DecoupledModel:
    """The decoupled model of ``weights``; a checkpoint without gates gets one sentence saying to decouple it."""
    from ..methods.decoupling import load_decoupled
    from ..models.checkpoint import read_checkpoint

    checkpoint = checkpoint_of(weights)
    if read_checkpoint(checkpoint).get("format") != DECOUPLED_FORMAT:
        raise UserInputError(f"{str(weights)!r} is a network without gates, and path analyses read gate vectors: decouple "
                             "it first (`filterscope decouple`) and pass the decoupled checkpoint.")
    return load_decoupled(checkpoint)


def dense_network_of(model: DecoupledModel, dense_weights: str | None):
    """The dense baseline: ``dense_weights`` in the model's architecture, or the model's own weights without gates."""
    from ..engine import base_network
    from ..models import create_model
    from ..models.checkpoint import read_checkpoint

    if dense_weights is None:
        return base_network(model).eval()
    if read_checkpoint(dense_weights).get("format") == DECOUPLED_FORMAT:
        raise UserInputError(f"--dense-weights {dense_weights!r} is a decoupled checkpoint; pass the plain network's "
                             "checkpoint (or leave it out to use the decoupled model's weights without gates).")
    if not model.model_name:
        raise UserInputError("the decoupled model was built from a custom network, so --dense-weights cannot be rebuilt "
                             "here; pass the dense network to filterscope.analyses.path_embedding in Python.")
    return create_model(model.model_name, model.num_classes, dense_weights).eval()


def sampled_inputs(model: DecoupledModel, settings: PathAnalysisSettings):
    """(the sampled data set, its indices in the split, the class names), normalised as the model was trained."""
    from ..data import load_dataset
    from ..models import model_spec

    if model.input_mean is not None and model.input_std is not None:
        mean, std = model.input_mean, model.input_std
    elif model.model_name:
        mean, std = model_spec(model.model_name).mean, model_spec(model.model_name).std
    else:
        raise UserInputError(f"{settings.weights!r} does not say how its inputs were normalised; decouple it with "
                             "run_decoupling, or give the network input_mean and input_std attributes before decoupling.")
    dataset = load_dataset(settings.data, settings.split, mean=mean, std=std, val_fraction=settings.val_fraction,
                           expected_image_shape=tuple(model.input_shape),
                           expected_num_classes=model.num_classes)
    available = len(dataset)
    if settings.samples is not None and settings.samples > available:
        raise UserInputError(f"--samples {settings.samples} is more than the {available} images of {settings.data} "
                             f"[{settings.split}]; pass at most {available}.")
    count = min(available, settings.samples if settings.samples is not None else DEFAULT_SAMPLES)
    indices = np.sort(np.random.default_rng(settings.seed).choice(available, size=count, replace=False))
    return dataset.subset(indices), indices, list(dataset.classes)


def _loader(dataset, settings: PathAnalysisSettings):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=settings.batch_size, shuffle=False)


def _prepared(settings: PathAnalysisSettings):
    from ..core.distributed import resolve_device

    model = load_gated_model(settings.weights)
    device = resolve_device(settings.device)
    return model.to(device), device


def run_path_embedding(settings: PathAnalysisSettings, config: PathEmbeddingConfig | None = None) -> dict:
    """Embed the paths of the checkpoint beside the dense baselines; write the run directory (if any).

    Returns:
        ``metrics.json["path_embedding"]``: the result's summary with the settings' sample added.
    """
    config = (config or PathEmbeddingConfig()).validate()
    model, device = _prepared(settings)
    dense = dense_network_of(model, settings.dense_weights).to(device)
    dataset, indices, classes = sampled_inputs(model, settings)
    result = path_embedding(model, _loader(dataset, settings), config, dense_network=dense, classes=classes,
                            device=device, progress=settings.progress)
    summary = {**result.summary(), "split": settings.split, "sample_seed": settings.seed,
               "dense_source": settings.dense_weights or "the decoupled checkpoint's weights without its gates"}
    if settings.run_dir is not None:
        from ..report.figures_paths import draw_path_embedding

        run = RunDir(settings.run_dir)
        arrays = {**result.arrays(), "sample_indices": indices}
        _save_npz(run.arrays / "path_embedding.npz", arrays)
        draw_path_embedding({name: r.embedding for name, r in result.representations.items()}, result.labels, summary,
                            run.figures / "path_embedding.png")
        run.update_metrics("path_embedding", summary)
    return summary


def run_path_tree(settings: PathAnalysisSettings, config: HopkinsTreeConfig | None = None) -> dict:
    """Grow the Hopkins decision tree of the checkpoint's gate vectors; write the run directory (if any).

    Returns:
        ``metrics.json["path_tree"]``: counts and where each class first parts (the whole tree is in
        ``arrays/path_tree.json``, and under ``"tree"`` here when no run directory is written).
    """
    config = (config or HopkinsTreeConfig()).validate()
    model, device = _prepared(settings)
    dataset, indices, classes = sampled_inputs(model, settings)
    result = hopkins_tree(model, _loader(dataset, settings), config, classes=classes, device=device,
                          progress=settings.progress)
    full = result.summary()
    summary = {key: value for key, value in full.items() if key not in ("tree", "class_parting")}
    summary.update(split=settings.split, sample_seed=settings.seed, class_parting={
        name: {"first_parts_at": row["first_parts_at"], "parts_from": row["parts_from"]}
        for name, row in full["class_parting"]["per_class"].items()})
    if settings.run_dir is None:
        return {**summary, "tree": full["tree"]}
    from ..report.figures_paths import draw_class_parting, draw_hopkins_tree

    run = RunDir(settings.run_dir)
    pairwise = np.asarray(full["class_parting"]["pairwise_layer_index"], dtype=np.int64)
    write_text_atomically(run.arrays / "path_tree.json", json.dumps(full, indent=1) + "\n")
    _save_npz(run.arrays / "path_tree.npz", {"sample_indices": indices, "labels": result.labels,
                                              "pairwise_parting_layer": pairwise})
    draw_hopkins_tree(full["tree"], result.layer_names, classes, run.figures / "path_tree.png", config.threshold)
    draw_class_parting(pairwise, result.layer_names, classes, run.figures / "class_parting.png")
    summary["tree_file"] = "arrays/path_tree.json"
    run.update_metrics("path_tree", summary)
    return summary


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from ..core.atomic import atomic_file

    with atomic_file(path) as stream:
        np.savez_compressed(stream, **arrays)
