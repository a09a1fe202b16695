"""Calculation paths of a saved decoupled model over any data split, written into a run directory.

``filterscope decouple`` records the paths of its evaluation split when it ends; this records them
for any split of any data set with the same classes (``filterscope paths``), so that the training
split's paths, or another data set's, sit beside the test split's in the same run directory:

    arrays/paths_<split>.npz                          bit-packed paths, labels, predictions, FLOPs
    figures/{filter_states,activation_counts,flops_per_input}_<split>.png
    metrics.json["paths_<split>"]                     accuracy, FLOPs, filter states, per layer
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import UserInputError
from ..io.run_dir import RunDir
from ..methods.decoupling.paths import PathRecord, collect_paths


def write_path_record(record: PathRecord, run: RunDir, split: str, *, save_paths: bool = True) -> dict[str, Any]:
    """Write ``record`` as the paths of ``split`` into ``run``: arrays, figures and metrics.

    Returns:
        ``record.summary()``, as stored under ``metrics.json["paths_<split>"]``.
    """
    from ..core import distributed
    from ..report import figures_decouple as figures

    summary = record.summary()
    if not distributed.is_main_process():
        return summary
    if save_paths:
        record.save(run.arrays / f"paths_{split}.npz")
    figures.draw_filter_states(record, run.figures / f"filter_states_{split}.png")
    figures.draw_activation_histograms(record, run.figures / f"activation_counts_{split}.png")
    figures.draw_flops_per_input(record, run.figures / f"flops_per_input_{split}.png")
    run.update_metrics(f"paths_{split}", summary)
    return summary


def checkpoint_of(run_or_checkpoint: str | Path) -> Path:
    """A checkpoint file as given, or ``checkpoints/last.pt`` of a run directory."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
        if not path.is_file():
            raise UserInputError(f"run directory {str(run_or_checkpoint)!r} has no checkpoints/last.pt; "
                                 "give the checkpoint file of a decoupled model instead.")
    return path


def record_checkpoint_paths(
    run_or_checkpoint: str | Path,
    data: str,
    *,
    split: str = "test",
    run_dir: str | Path | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    val_fraction: float = 0.0,
    seed: int = 0,
    save_paths: bool = True,
    progress: bool = True,
    base_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Record the calculation paths and filter states of a decoupled checkpoint over one split of ``data``.

    Args:
        run_or_checkpoint: a ``filterscope decouple`` run directory or a decoupled checkpoint file.
        data: a registered data set name, or a folder or ``.zip`` of ``split/class/image`` files,
            with the classes the model was trained on.
        split: ``"train"``, ``"val"`` or ``"test"`` (images without augmentation).
        run_dir: where to write; default the run directory the checkpoint belongs to
            (``<run>/checkpoints/last.pt`` → ``<run>``).
        save_paths: also write the bit-packed paths (``False``: filter states and figures only).
        base_model: the undecoupled architecture of a run that decoupled your own network
            (``run_decoupling(model=...)``); not needed for the built-in models.

    Returns:
        The summary written under ``metrics.json["paths_<split>"]``, with ``run_dir`` added.
    """
    from torch.utils.data import DataLoader

    from ..data import load_dataset
    from ..methods.decoupling import load_decoupled
    from ..core.distributed import resolve_device
    from ..models import model_spec

    checkpoint = checkpoint_of(run_or_checkpoint)
    model = load_decoupled(checkpoint, base_model)  # a custom model's checkpoint needs base_model
    if getattr(model, "input_mean", None) is not None and getattr(model, "input_std", None) is not None:
        mean, std = model.input_mean, model.input_std  # as the run normalised them (stored in the checkpoint)
    elif model.model_name:
        spec = model_spec(model.model_name)
        mean, std = spec.mean, spec.std
    else:
        raise UserInputError(f"{str(checkpoint)!r} does not say how its inputs were normalised; give the network "
                             "input_mean and input_std attributes before decoupling it, or decouple it with run_decoupling.")
    dataset = load_dataset(data, split, mean=mean, std=std, val_fraction=val_fraction, seed=seed,
                           expected_image_shape=tuple(model.input_shape), expected_num_classes=model.num_classes)
    torch_device = resolve_device(device)
    record = collect_paths(model.to(torch_device), DataLoader(dataset, batch_size=batch_size, shuffle=False),
                           device=torch_device, progress=progress, keep_paths=save_paths)
    run = RunDir(run_dir if run_dir is not None else default_run_dir(checkpoint))
    summary = write_path_record(record, run, split, save_paths=save_paths)
    return {**summary, "run_dir": str(run.path)}


def default_run_dir(checkpoint: Path) -> Path:
    """``<run>/checkpoints/x.pt`` → ``<run>``; any other checkpoint → the folder it lies in."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
