"""One training loop for plain training, fine-tuning and (later) decoupled training.

The loop is deterministic for a given seed: every epoch reseeds the samplers and the random
augmentation from ``(seed, epoch, rank)``, so a run killed mid-epoch and resumed from its last
epoch checkpoint ends with the same weights as an uninterrupted run. Under ``torchrun`` it
trains with DistributedDataParallel (gloo on CPU, NCCL on GPU), each process taking its share
of the global batch.
"""

from __future__ import annotations

import copy
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from ..core import distributed
from ..core.config import check_choices
from ..core.errors import UserInputError
from ..analyses.evaluate import EvalResult, evaluate
from ..models import create_model, model_spec
from ..models.checkpoint import read_checkpoint, save_atomically
from ..io.run_log import JsonLinesLog
from ..io.run_dir import RunDir, warn_if_settings_changed
from .wrapping import rewrap_for_unused_parameters, wrap_for_training

SCHEDULES = ("cosine", "step", "constant")


class EvaluationObserver(Protocol):
    """Measures more from an epoch's evaluation pass than accuracy and loss (see ``train``)."""

    def observe(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """Called after every evaluation batch's forward pass."""

    def metrics(self) -> dict[str, Any]:
        """What to log with the epoch, once the pass is over."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``config.yaml`` in the run directory.

    Attributes:
        model: registered model name.
        data: registered data set name, or a path to an image folder or zip.
        weights: checkpoint to start from (fine-tuning); None trains from scratch.
        num_classes: classes of the model's output; None takes the data set's.
        epochs: passes over the training split.
        batch_size: global batch size (split evenly over ``torchrun`` processes).
        lr: peak learning rate of SGD.
        momentum: SGD momentum.
        weight_decay: L2 penalty of SGD.
        nesterov: Nesterov momentum.
        schedule: "cosine" (to zero over all steps), "step" (×gamma at each milestone epoch) or "constant".
        milestones: epochs at which the step schedule multiplies the rate by ``gamma``.
        gamma: factor of the step schedule.
        warmup_epochs: linear warm-up of the learning rate over this many epochs (may be fractional).
        seed: seed of everything random (initialisation, sampling, augmentation, validation split).
        augment: random crop and horizontal flip on training images.
        val_fraction: share of the training split held out as a validation split.
        eval_split: split evaluated after every epoch ("test" or "val").
        device: "cpu", "cuda", "cuda:N" or "auto".
        workers: data-loader worker processes.
        threads: intra-op CPU threads (None leaves torch's default).
        run_dir: folder of the run.
        resume: continue from ``run_dir/checkpoints/last.pt`` when it exists.
        max_steps_per_epoch: stop each epoch early (for quick checks and tests).
        progress: show progress bars (the one line per epoch is printed either way).
        log: also write every step's and every epoch's numbers to this file as JSON lines.
        compile: run the training steps through ``torch.compile`` (fuses the elementwise passes;
            the first step compiles for a minute or so, needs a C++ compiler on CPU, and results
            are not bit-identical to eager mode). Evaluation stays eager.
    """

    model: str = "digits_cnn"
    data: str = "digits"
    weights: str | None = None
    num_classes: int | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    seed: int = 0
    augment: bool = True
    val_fraction: float = 0.0
    eval_split: str = field(default="test", metadata={"choices": ("test", "val")})
    device: str = "cpu"
    workers: int = 0
    threads: int | None = None
    run_dir: str = "runs/train"
    resume: bool = False
    max_steps_per_epoch: int | None = None
    progress: bool = True
    compile: bool = False
    log: str | None = None

    def validate(self) -> None:
        """Raise one clear error for a value that cannot work."""
        if self.epochs < 1:
            raise UserInputError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise UserInputError(f"batch size must be at least 1, got {self.batch_size}.")
        if not self.lr > 0:
            raise UserInputError(f"learning rate must be positive, got {self.lr}.")
        if self.workers < 0:
            raise UserInputError(f"workers must be at least 0 (0 loads the data in the main process), got {self.workers}.")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise UserInputError(f"max steps per epoch must be at least 1 (or unset for whole epochs), got {self.max_steps_per_epoch}.")
        if self.num_classes is not None and self.num_classes < 1:
            raise UserInputError(f"num classes must be at least 1 (or unset for the data set's), got {self.num_classes}.")
        check_choices(self)  # schedule, eval_split
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserInputError(f"val fraction must be in [0, 1), got {self.val_fraction}.")
        if self.eval_split == "val" and self.val_fraction == 0:
            raise UserInputError("eval split 'val' needs a validation split: pass --val-fraction, e.g. 0.1.")
        if self.compile and not self.device.startswith("cuda") and not cxx_compiler_available():
            raise UserInputError("--compile on CPU needs a C++ compiler (g++ or c++ on PATH); install one or drop --compile.")


def cxx_compiler_available() -> bool:
    """torch.compile on CPU builds C++ kernels: is a compiler on PATH?"""
    return bool(shutil.which("g++") or shutil.which("c++"))


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    final: dict[str, Any]
    run_dir: Path
    # The observer of the last epoch's evaluation when this process trained that epoch (None after a
    # resume with no epoch left): it has seen the trained model on the whole evaluation split.
    last_observer: EvaluationObserver | None = None


# An objective turns a batch and the global step into (loss, logits, named loss terms). The default
# is cross-entropy; decoupled training adds its gate losses through the same signature.
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


def cross_entropy_objective(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, step: int = 0):
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    return loss, logits, {"ce": loss}


def learning_rate_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at global ``step`` (warm-up, then the schedule)."""
    epoch_float = step / steps_per_epoch
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        progress = (step - warmup_steps) / max(1.0, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if config.schedule == "step":
        return config.gamma ** sum(epoch_float >= m for m in config.milestones)
    return 1.0


def input_normalization(config: TrainConfig, model: nn.Module | None = None) -> tuple[tuple, tuple, tuple]:
    """(mean, std, image shape) the data is normalised with: the model's own ``input_mean``,
    ``input_std`` and ``input_shape`` attributes when it has all three, else those of the
    registered ``config.model``."""
    own = [getattr(model, name, None) for name in ("input_mean", "input_std", "input_shape")]
    if all(value is not None for value in own):
        return tuple(own[0]), tuple(own[1]), tuple(own[2])
    spec = model_spec(config.model)
    return tuple(spec.mean), tuple(spec.std), tuple(spec.input_shape)


def load_data(config: TrainConfig, mean, std, image_shape, num_classes: int | None, *, augment: bool | None = None):
    """The training set (augmented as ``config.augment`` says, or as ``augment`` overrides) and the evaluation set of ``config``."""
    from ..data import load_dataset

    common = dict(
        mean=mean,
        std=std,
        val_fraction=config.val_fraction,
        seed=config.seed,
        expected_image_shape=tuple(image_shape),
        expected_num_classes=num_classes,
    )
    train_set = load_dataset(config.data, "train", augment=config.augment if augment is None else augment, **common)
    eval_set = load_dataset(config.data, config.eval_split, augment=False, **common)
    return train_set, eval_set


# Settings that change how a run executes, not what it computes: resuming with others is expected.
RUNTIME_ONLY_SETTINGS = ("resume", "progress", "threads", "workers", "device", "compile")


def _seed_epoch(config: TrainConfig, epoch: int) -> None:
    torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + distributed.rank())


@dataclass
class TrainingSetup:
    """What a run trains with, put together by :func:`prepare_training` and used by each epoch."""

    config: TrainConfig
    device: torch.device
    is_distributed: bool
    model: nn.Module
    training_model: nn.Module  # the model, wrapped for DDP and torch.compile as the config says
    optimizer: torch.optim.Optimizer
    train_set: Any
    eval_loader: DataLoader
    num_classes: int
    steps_per_epoch: int
    run: RunDir
    last_checkpoint: Path
    log: JsonLinesLog
    finds_unused_parameters: bool = False  # whether the DDP wrapper looks for parameters without gradient


def train(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    objective: Objective = cross_entropy_objective,
    param_groups: Callable[[nn.Module], list[dict]] | None = None,
    observe_evaluation: Callable[[nn.Module, int], EvaluationObserver] | None = None,
    checkpoint_extra: Callable[[nn.Module], dict[str, Any]] | None = None,
    before_evaluation: Callable[[nn.Module, Any, int], None] | None = None,
    metrics_key: str = "train",
) -> TrainResult:
    """Train (or fine-tune) a model and write the run directory.

    Args:
        config: the run's settings.
        model: a model to train instead of building ``config.model``; it is copied, never changed.
            The data is normalised as :func:`input_normalization` says.
        objective: maps (model, images, labels, global step) to (loss, logits, loss terms).
        param_groups: optional ``model -> optimizer parameter groups`` (e.g. a separate gate rate).
        observe_evaluation: optional ``(model, epoch) -> observer``, called before every epoch's
            evaluation; the observer sees each evaluation batch and its ``metrics()`` are logged with
            the epoch, so that more is measured from the same pass instead of a second one.
        checkpoint_extra: optional ``model -> dict`` stored in every checkpoint (what is needed to rebuild it).
        before_evaluation: optional ``(model, train_set, epoch) -> None`` run after each epoch's last
            step and before its evaluation (e.g. re-estimating BatchNorm statistics).
        metrics_key: key of this run in ``metrics.json``.

    Returns:
        The trained model (unwrapped, in evaluation mode), the per-epoch history and final numbers.
    """
    setup, history, start_epoch = prepare_training(config, model, param_groups, metrics_key)
    start_time = time.time()
    last_eval: EvalResult | None = None
    observer: EvaluationObserver | None = None
    for epoch in range(start_epoch, config.epochs):
        rewrap_for_unused_parameters(setup, objective, epoch)
        record = train_one_epoch(setup, objective, epoch)
        if before_evaluation is not None:
            before_evaluation(setup.model, setup.train_set, epoch)
        observer = observe_evaluation(setup.model, epoch) if observe_evaluation is not None else None
        last_eval = evaluate(setup.model, setup.eval_loader, setup.num_classes, device=setup.device, progress=False,
                             observe=observer.observe if observer is not None else None)
        record.update({f"{config.eval_split}_accuracy": last_eval.accuracy, f"{config.eval_split}_loss": last_eval.loss})
        if observer is not None:
            record.update(observer.metrics())
        history.append(record)
        if distributed.is_main_process():
            save_epoch(setup, history, epoch, checkpoint_extra, metrics_key)
        distributed.barrier()
    final = finish_training(setup, last_eval, time.time() - start_time)
    if distributed.is_main_process():
        setup.run.update_metrics(metrics_key, {"history": history, "final": final, "complete": True})
    return TrainResult(model=setup.model, history=history, final=final, run_dir=setup.run.path, last_observer=observer)


def check_weights_fit(config: TrainConfig, path: str) -> None:
    """A checkpoint of another architecture, said before the data is decoded: the model is built with the data
    set's class count (read without decoding the data set) and the checkpoint loaded into it."""
    from ..data.loading import dataset_info

    classes = config.num_classes or len(dataset_info(config.data).classes)
    create_model(config.model, classes, path)


def prepare_training(config: TrainConfig, model: nn.Module | None, param_groups: Callable[[nn.Module], list[dict]] | None,
                     metrics_key: str) -> tuple[TrainingSetup, list[dict[str, Any]], int]:
    """Validate ``config``, start the process group, load the data, build (or copy) the model and its
    optimizer, resume them from the run's last checkpoint if asked, and wrap the model for training.

    Returns:
        The setup, the history so far and the first epoch to train.
    """
    config.validate()
    if config.weights and model is None:
        read_checkpoint(config.weights)  # missing, empty or corrupt: said before the data is decoded
        check_weights_fit(config, config.weights)
    device = distributed.resolve_device(config.device)
    is_distributed = distributed.init_distributed(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    world = distributed.world_size()
    if config.batch_size % world:
        raise UserInputError(
            f"batch size {config.batch_size} does not split over {world} processes; pass a multiple of {world}."
        )
    torch.manual_seed(config.seed)
    mean, std, image_shape = input_normalization(config, model)
    train_set, eval_set = load_data(config, mean, std, image_shape, config.num_classes)
    num_classes = len(train_set.classes)
    model = create_model(config.model, num_classes, config.weights) if model is None else copy.deepcopy(model)
    model.to(device)
    run = RunDir(config.run_dir)
    optimizer = build_optimizer(config, model, param_groups)
    history, start_epoch = resume_or_start(config, run, model, optimizer, metrics_key)
    training_model = wrap_for_training(model, device, distributed=is_distributed, compile=config.compile)
    eval_loader = DataLoader(distributed.shard_for_evaluation(eval_set), batch_size=max(256, config.batch_size // world),
                             shuffle=False, num_workers=config.workers)
    setup = TrainingSetup(config, device, is_distributed, model, training_model, optimizer, train_set, eval_loader,
                          num_classes, steps_per_epoch(config, train_set), run, run.checkpoints / "last.pt",
                          JsonLinesLog(config.log if distributed.is_main_process() else None))
    return setup, history, start_epoch


def build_optimizer(config: TrainConfig, model: nn.Module, param_groups: Callable[[nn.Module], list[dict]] | None):
    """SGD over ``param_groups(model)`` (or every trainable parameter), each group remembering its peak rate."""
    groups = param_groups(model) if param_groups else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for group in groups:
        group.setdefault("lr", config.lr)
        group["peak_lr"] = group["lr"]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def steps_per_epoch(config: TrainConfig, train_set) -> int:
    """Steps of one epoch: whole global batches (the loaders drop the last partial one), at most ``max_steps_per_epoch``."""
    steps = len(train_set) // config.batch_size
    if steps < 1:
        raise UserInputError(
            f"the training split has {len(train_set)} images, fewer than one batch of {config.batch_size}; lower --batch-size."
        )
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


def resume_or_start(config: TrainConfig, run: RunDir, model: nn.Module, optimizer: torch.optim.Optimizer,
                    metrics_key: str) -> tuple[list[dict[str, Any]], int]:
    """(history, first epoch to train): ``model`` and ``optimizer`` loaded from ``last.pt`` when resuming
    and it exists, else from scratch; the run's config is (re)written."""
    last_checkpoint = run.checkpoints / "last.pt"
    recorded_config = {"verb": metrics_key, **asdict(config)}
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if config.resume and last_checkpoint.exists():
        state = read_checkpoint(last_checkpoint)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state.get("history", []))
        start_epoch = int(state["epoch"])
        if distributed.is_main_process():
            warn_if_settings_changed(run, recorded_config, ignore=RUNTIME_ONLY_SETTINGS)
        if distributed.is_main_process() and config.progress:
            print(f"resuming {config.run_dir} after epoch {start_epoch}")
    elif config.resume and distributed.is_main_process():
        print(f"no checkpoint in {run.checkpoints}; starting from scratch")
    if distributed.is_main_process():
        run.write_config(recorded_config)
    return history, start_epoch


def epoch_loader(setup: TrainingSetup, epoch: int) -> DataLoader:
    """The training batches of ``epoch``, in an order drawn from (seed, epoch): the same after a resume."""
    config = setup.config
    if setup.is_distributed:
        sampler = DistributedSampler(setup.train_set, seed=config.seed, shuffle=True, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch)
        sampler = RandomSampler(setup.train_set, generator=generator)
    return DataLoader(setup.train_set, batch_size=config.batch_size // distributed.world_size(), sampler=sampler,
                      num_workers=config.workers, drop_last=True)


def train_one_epoch(setup: TrainingSetup, objective: Objective, epoch: int) -> dict[str, Any]:
    """One pass over the training split; the epoch's record of training numbers, summed over processes."""
    config, optimizer = setup.config, setup.optimizer
    _seed_epoch(config, epoch)
    loader = epoch_loader(setup, epoch)
    setup.training_model.train()
    sums: dict[str, float] = {}
    correct = seen = 0
    epoch_start = time.time()
    bar = tqdm(total=setup.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not (config.progress and distributed.is_main_process()), leave=False)
    for step, (images, labels) in enumerate(loader):
        if step >= setup.steps_per_epoch:
            break
        global_step = epoch * setup.steps_per_epoch + step
        factor = learning_rate_factor(config, global_step, setup.steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        images, labels = images.to(setup.device, non_blocking=True), labels.to(setup.device, non_blocking=True)
        loss, logits, terms = objective(setup.training_model, images, labels, global_step)
        check_finite(loss, terms, epoch, step, setup.last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.3f}")
        setup.log.write("step", epoch=epoch + 1, step=step + 1, lr=optimizer.param_groups[0]["lr"], loss=loss.item(),
                        accuracy=correct / seen)
    bar.close()
    # Training numbers of this process are summed over processes.
    totals = torch.tensor([correct, seen, *sums.values()], dtype=torch.float64)
    distributed.all_reduce_sum(totals)
    return {
        "epoch": epoch + 1,
        "lr": optimizer.param_groups[0]["lr"],
        "train_accuracy": float(totals[0] / max(totals[1], 1)),
        **{f"train_{name}": float(totals[2 + i] / max(totals[1], 1)) for i, name in enumerate(sums)},
        "epoch_seconds": time.time() - epoch_start,
    }


def check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int, step: int, last_checkpoint: Path) -> None:
    """Stop with one sentence naming the non-finite terms and the checkpoint to resume from."""
    if torch.isfinite(loss):
        return
    bad = [name for name, value in terms.items() if not torch.isfinite(torch.as_tensor(value)).all()]
    raise FloatingPointError(
        f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
        f"(non-finite terms: {', '.join(bad) or 'the total'}); the last good checkpoint is "
        f"{last_checkpoint if last_checkpoint.exists() else 'none yet'}: lower the learning rate "
        "or the loss weights and resume."
    )


def save_epoch(setup: TrainingSetup, history: list[dict[str, Any]], epoch: int,
               checkpoint_extra: Callable[[nn.Module], dict[str, Any]] | None, metrics_key: str) -> None:
    """Write the epoch's checkpoint (the model, and the training schedule: optimizer, epoch, history,
    config) and metrics; print the epoch's numbers."""
    config = setup.config
    payload = {
        "state_dict": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "epoch": epoch + 1,
        "history": history,
        "config": asdict(config),
        "model_name": config.model,
        "num_classes": setup.num_classes,
        "classes": list(setup.train_set.classes),
    }
    if checkpoint_extra is not None:
        payload.update(checkpoint_extra(setup.model))
    save_atomically(payload, setup.last_checkpoint)
    setup.run.update_metrics(metrics_key, {"history": history, "complete": epoch + 1 == config.epochs})
    setup.log.write("epoch", **{k: v for k, v in history[-1].items() if isinstance(v, (int, float, str))})
    if distributed.is_main_process():  # one line per epoch on stderr, with or without progress bars
        shown = ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if isinstance(v, float) and k != "lr")
        tqdm.write(f"epoch {epoch + 1}/{config.epochs}: {shown}", file=sys.stderr)


def finish_training(setup: TrainingSetup, last_eval: EvalResult | None, seconds: float) -> dict[str, Any]:
    """The final numbers; the model is left in evaluation mode."""
    setup.model.eval()
    setup.log.close()
    # The last epoch's evaluation pass measured this same model on the same loader: it is the final
    # evaluation. Only a resumed run with no epoch left to train measures it here.
    final_eval = last_eval if last_eval is not None else evaluate(setup.model, setup.eval_loader, setup.num_classes,
                                                                  device=setup.device, progress=False)
    return {
        **final_eval.to_dict(list(setup.train_set.classes)),
        "split": setup.config.eval_split,
        "epochs": setup.config.epochs,
        "wall_seconds_this_process": seconds,
        "world_size": distributed.world_size(),
    }
