"""``filterscope adversarial``: detect adversarial inputs of a decoupled checkpoint from its calculation paths.

Loads the decoupled checkpoint and its dense network (the same fine-tuned weights with the gates taken out,
:func:`filterscope.engine.base_network`), picks a pool of training-split images and a fixed test set (the first
images of each class, in the split's order), runs :func:`filterscope.analyses.adversarial.run` and writes:

    metrics.json["adversarial"]        attacks (success rates, dropped images), the Table 6 grid, the pair
    adversarial.md                     the grid as markdown tables (AUC mean ± std)
    arrays/adversarial.npz             AUC grids, the pair's bit-packed paths, groups, embedding, frequencies
    figures/adversarial_auc.png, adversarial_pair_frequencies.png, adversarial_pair_embedding.png
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analyses.adversarial import AdversarialConfig, AdversarialResult, LabelledImages, run
from ..core.atomic import atomic_file
from ..core.errors import UserInputError
from ..io.run_dir import RunDir, write_text_atomically

DEFAULT_PAIR = ("dog", "truck")


@dataclass
class AdversarialOptions:
    """What ``filterscope adversarial`` reads and writes (the analysis settings are in ``config``).

    Attributes:
        checkpoint: a decoupled checkpoint, or a run directory holding ``checkpoints/last.pt``.
        data: the data set the model was trained on.
        pool_per_class: training-split images per class attacked; the n per class of each run are drawn from
            those whose attack succeeded.
        test_per_class: test-split images per class in the fixed test set.
        pair: the Fig. 10 class pair (names or indices); None skips it. The default, dog → truck, is used only
            where the data set has both classes.
        run_dir: where to write; None writes nothing.
    """

    checkpoint: str
    data: str
    config: AdversarialConfig = field(default_factory=AdversarialConfig)
    pool_per_class: int = 20
    test_per_class: int = 100
    pair: tuple[Any, Any] | None = DEFAULT_PAIR
    run_dir: str | None = None
    device: str = "cpu"
    progress: bool = True


def load_decoupled_checkpoint(path: str | Path):
    """The decoupled model of a checkpoint or run directory; a model without gates gets one sentence."""
    from ..methods.decoupling import load_decoupled
    from ..methods.decoupling.checkpoint import DECOUPLED_FORMAT
    from ..models.checkpoint import read_checkpoint
    from .paths import checkpoint_of

    checkpoint = checkpoint_of(path)
    if read_checkpoint(checkpoint).get("format") != DECOUPLED_FORMAT:
        raise UserInputError(f"{str(checkpoint)!r} holds a model without gates; decouple it first (filterscope decouple "
                             "--model NAME --weights CHECKPOINT ...) and pass the decoupled checkpoint.")
    return load_decoupled(checkpoint)


def check_sizes(options: AdversarialOptions) -> None:
    """The image counts, before any work: n can be drawn from the pool, the sets are not empty."""
    if options.pool_per_class < 1 or options.test_per_class < 1:
        raise UserInputError("the pool and test images per class must be at least 1, got "
                             f"{options.pool_per_class} and {options.test_per_class}.")
    largest = max(options.config.detection.n_per_class)
    if largest > options.pool_per_class:
        raise UserInputError(f"n = {largest} training images per class is more than the pool of {options.pool_per_class} "
                             "per class; lower --n or raise --pool-per-class.")


def _first_per_class(targets: np.ndarray, per_class: int, num_classes: int, split: str, notes: list[str]) -> np.ndarray:
    chosen = []
    for label in range(num_classes):
        indices = np.flatnonzero(targets == label)[:per_class]
        if len(indices) < per_class:
            notes.append(f"the {split} split has {len(indices)} images of class {label}, fewer than {per_class}; "
                         "all of them are used")
        chosen.append(indices)
    return np.concatenate(chosen)


def first_per_class(dataset, per_class: int, num_classes: int, split: str, notes: list[str]) -> LabelledImages:
    """The first ``per_class`` images of each class of ``dataset``, in its order (a note where a class has fewer)."""
    indices = _first_per_class(np.asarray(dataset.targets), per_class, num_classes, split, notes)
    images = torch.stack([dataset[int(i)][0] for i in indices]) if len(indices) else torch.zeros(0)
    return LabelledImages(images, np.asarray(dataset.targets)[indices])


def resolve_pair(pair, classes: list[str], num_classes: int, default: bool) -> tuple[int, int] | None:
    """(a, b) as class indices; the default pair is skipped (None) on data sets without those classes."""
    from ..methods.semantic_pruning.selection import resolve_class

    if pair is None:
        return None
    if default and not all(name in classes for name in pair):
        return None
    return resolve_class(pair[0], classes, num_classes), resolve_class(pair[1], classes, num_classes)


def run_adversarial(options: AdversarialOptions) -> dict[str, Any]:
    """Run the analysis (see the module); the summary written under ``metrics.json["adversarial"]``."""
    from ..core.distributed import resolve_device
    from ..data import load_dataset
    from ..data.loading import dataset_info
    from ..engine import base_network
    from ..models import model_spec

    check_sizes(options)
    decoupled = load_decoupled_checkpoint(options.checkpoint)
    classes = list(dataset_info(options.data).classes)
    options.config.pair = resolve_pair(options.pair, classes, decoupled.num_classes, options.pair == DEFAULT_PAIR)
    options.config.validate(decoupled.num_classes)
    if decoupled.input_mean is not None and decoupled.input_std is not None:
        mean, std = decoupled.input_mean, decoupled.input_std
    else:
        spec = model_spec(decoupled.model_name)
        mean, std = spec.mean, spec.std
    loaded = {split: load_dataset(options.data, split, mean=mean, std=std, expected_image_shape=tuple(decoupled.input_shape),
                                  expected_num_classes=decoupled.num_classes) for split in ("train", "test")}
    notes: list[str] = []
    train = first_per_class(loaded["train"], options.pool_per_class, decoupled.num_classes, "train", notes)
    test = first_per_class(loaded["test"], options.test_per_class, decoupled.num_classes, "test", notes)
    device = resolve_device(options.device)
    decoupled = decoupled.to(device)
    dense = base_network(decoupled).to(device)
    progress = (lambda line: print(f"adversarial: {line}", file=sys.stderr)) if options.progress else None
    result = run(decoupled, dense, train, test, options.config, mean=mean, std=std, class_names=classes, progress=progress)
    summary = {**result.summary(), "checkpoint": str(options.checkpoint), "data": str(options.data),
               "model": decoupled.model_name, "pool_per_class": options.pool_per_class,
               "test_per_class": options.test_per_class, "notes": notes,
               "images": {"train_pool": int(len(train.labels)), "test": int(len(test.labels))}}
    for message in notes + result.warnings():
        warnings.warn(message, stacklevel=2)
    if options.run_dir is not None:
        write_adversarial(RunDir(options.run_dir), result, summary)
        summary["run_dir"] = str(options.run_dir)
    return summary


def write_adversarial(run: RunDir, result: AdversarialResult, summary: dict) -> None:
    """metrics.json["adversarial"], adversarial.md, arrays/adversarial.npz and the figures."""
    from ..report import figures_adversarial as figures

    arrays = result.arrays()
    with atomic_file(run.arrays / "adversarial.npz") as stream:
        np.savez_compressed(stream, **arrays)
    detection = result.config.detection
    grids = {f"{g.train_attack} → {g.test_attack}": (arrays[f"auc_{g.train_attack}_to_{g.test_attack}"],
                                                     arrays[f"auc_{g.train_attack}_to_{g.test_attack}_std"])
             for g in result.grids}
    figures.draw_auc_grid(grids, detection.classifiers, detection.n_per_class, result.features,
                          run.figures / "adversarial_auc.png")
    if result.pair is not None:
        source, target = result.pair.source_name, result.pair.target_name
        names = [f"real {source}", f"real {target}", f"adversarial {source} → {target}"]
        figures.draw_pair_frequencies(arrays["pair_frequencies"], result.pair.widths, result.pair.layer_names, names,
                                      run.figures / "adversarial_pair_frequencies.png")
        figures.draw_pair_embedding(result.pair.embedding, result.pair.groups, names, result.pair.embedding_method,
                                    run.figures / "adversarial_pair_embedding.png")
    write_text_atomically(run.path / "adversarial.md", result.markdown())
    run.update_metrics("adversarial", summary)
