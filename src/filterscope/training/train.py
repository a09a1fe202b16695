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
from ..io.run_dir import RunDir, warn_if_settings_changed

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
        progress: show progress bars.
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

    def validate(self) -> None:
        """Raise one clear error for a value that cannot work."""
        if self.epochs < 1:
            raise UserInputError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise UserInputError(f"batch size must be at least 1, got {self.batch_size}.")
        if not self.lr > 0:
            raise UserInputError(f"learning rate must be positive, got {self.lr}.")
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
    config.validate()
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
    if model is None:
        model = create_model(config.model, num_classes, config.weights)
    else:
        model = copy.deepcopy(model)
    model.to(device)

    run = RunDir(config.run_dir)
    last_checkpoint = run.checkpoints / "last.pt"
    history: list[dict[str, Any]] = []
    start_epoch = 0
    groups = param_groups(model) if param_groups else [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for group in groups:
        group.setdefault("lr", config.lr)
        group["peak_lr"] = group["lr"]
    optimizer = torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=config.nesterov
    )
    recorded_config = {"verb": metrics_key, **asdict(config)}
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

    training_model: nn.Module = model
    if is_distributed:
        training_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        training_model = torch.compile(training_model)

    per_process_batch = config.batch_size // world
    eval_loader = DataLoader(
        distributed.shard_for_evaluation(eval_set), batch_size=max(256, per_process_batch), shuffle=False, num_workers=config.workers
    )
    steps_per_epoch = len(train_set) // config.batch_size  # the loaders drop the last partial batch
    if steps_per_epoch < 1:
        raise UserInputError(
            f"the training split has {len(train_set)} images, fewer than one batch of {config.batch_size}; lower --batch-size."
        )
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    start_time = time.time()
    last_eval: EvalResult | None = None
    observer: EvaluationObserver | None = None

    for epoch in range(start_epoch, config.epochs):
        _seed_epoch(config, epoch)
        if is_distributed:
            sampler = DistributedSampler(train_set, seed=config.seed, shuffle=True, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch)
            sampler = RandomSampler(train_set, generator=generator)
        loader = DataLoader(
            train_set, batch_size=per_process_batch, sampler=sampler, num_workers=config.workers, drop_last=True
        )
        training_model.train()
        sums: dict[str, float] = {}
        correct = seen = 0
        epoch_start = time.time()
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not (config.progress and distributed.is_main_process()),
            leave=False,
        )
        for step, (images, labels) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            global_step = epoch * steps_per_epoch + step
            factor = learning_rate_factor(config, global_step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * factor
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss, logits, terms = objective(training_model, images, labels, global_step)
            if not torch.isfinite(loss):
                bad = [name for name, value in terms.items() if not torch.isfinite(torch.as_tensor(value)).all()]
                raise FloatingPointError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(non-finite terms: {', '.join(bad) or 'the total'}); the last good checkpoint is "
                    f"{last_checkpoint if last_checkpoint.exists() else 'none yet'}: lower the learning rate "
                    "or the loss weights and resume."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.3f}")
        bar.close()

        # Training numbers of this process are summed over processes.
        totals = torch.tensor([correct, seen, *sums.values()], dtype=torch.float64)
        distributed.all_reduce_sum(totals)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_accuracy": float(totals[0] / max(totals[1], 1)),
            **{f"train_{name}": float(totals[2 + i] / max(totals[1], 1)) for i, name in enumerate(sums)},
            "epoch_seconds": time.time() - epoch_start,
        }
        if before_evaluation is not None:
            before_evaluation(model, train_set, epoch)
        observer = observe_evaluation(model, epoch) if observe_evaluation is not None else None
        last_eval = evaluate(model, eval_loader, num_classes, device=device, progress=False,
                             observe=observer.observe if observer is not None else None)
        record.update({f"{config.eval_split}_accuracy": last_eval.accuracy, f"{config.eval_split}_loss": last_eval.loss})
        if observer is not None:
            record.update(observer.metrics())
        history.append(record)
        if distributed.is_main_process():
            payload = {
                "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "config": asdict(config),
                "model_name": config.model,
                "num_classes": num_classes,
                "classes": list(train_set.classes),
            }
            if checkpoint_extra is not None:
                payload.update(checkpoint_extra(model))
            save_atomically(payload, last_checkpoint)
            run.update_metrics(metrics_key, {"history": history, "complete": epoch + 1 == config.epochs})
            if config.progress:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "lr")
                tqdm.write(f"epoch {epoch + 1}/{config.epochs}: {shown}")
        distributed.barrier()

    model.eval()
    # The last epoch's evaluation pass measured this same model on the same loader: it is the final
    # evaluation. Only a resumed run with no epoch left to train measures it here.
    final_eval = last_eval if last_eval is not None else evaluate(model, eval_loader, num_classes, device=device, progress=False)
    final = {
        **final_eval.to_dict(list(train_set.classes)),
        "split": config.eval_split,
        "epochs": config.epochs,
        "wall_seconds_this_process": time.time() - start_time,
        "world_size": world,
    }
    if distributed.is_main_process():
        run.update_metrics(metrics_key, {"history": history, "final": final, "complete": True})
    return TrainResult(model=model, history=history, final=final, run_dir=run.path, last_observer=observer)
