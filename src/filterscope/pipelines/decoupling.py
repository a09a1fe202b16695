"""Decoupled training through the common training loop: ``filterscope decouple``.

The pretrained network is decoupled, then trained with L = CE + λm·L_mi + λk·L_kl + λs·L_s. After
every epoch the BatchNorm statistics can be re-estimated under evaluation gates, and the epoch log
holds the accuracy, each loss term, the active-filter fraction per layer, the filter states and the
mean FLOPs per image — all measured with evaluation (hard, noise-free) gates.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..core import distributed
from .paths import write_path_record
from ..methods.decoupling.paths import PathCollector, PathRecord, collect_paths
from ..core.config import check_choices
from ..core.errors import UserInputError
from ..models import create_model, load_weights
from ..models.checkpoint import read_checkpoint
from ..io.run_dir import RunDir, warn_if_settings_changed
from ..training.train import TrainConfig, check_weights_fit, input_normalization, load_data, train
from ..methods.decoupling.batchnorm import recalibrate_batchnorm
from ..methods.decoupling.checkpoint import decoupled_metadata
from ..methods.decoupling.config import DecoupleConfig, schedule_settings
from ..methods.decoupling.legacy import upgrade_settings
from ..methods.decoupling.model import DecoupledModel
from ..methods.decoupling.objective import DecouplingObjective
from ..methods.decoupling.threshold import shift_gate_threshold, threshold_for_flops

DISTILL_PHASES = ("all", "path_finetune")


@dataclass
class DecouplingRunOptions:
    """Choices of a decoupling run beyond the training loop and the loss weights.

    L_kl is switched off by ``DecoupleConfig.lambda_kl = 0`` (earlier versions had ``use_kl`` here).

    Attributes:
        use_mi, use_sparsity: switch single loss terms off (the paper's Table 7 ablation).
        recalibrate_bn_images: training images used to re-estimate BatchNorm statistics under
            evaluation gates after every epoch (0 turns it off).
        save_paths: write the test split's bit-packed calculation paths after training.
        distill_weight: λd of a distillation term from the network as it was before decoupling
            (0: off; see DecouplingObjective).
        distill_temperature: T of that term.
        teacher_weights: a checkpoint of the same architecture to distil from instead (for example
            the dense network fine-tuned with the same schedule); None: the starting weights.
        distill_phase: when the distillation term applies: ``"all"`` the steps, or only during path
            fine-tuning (``"path_finetune"``), where the gates are frozen: the teacher then trains the
            network on its paths without pulling the gates towards its own (input-independent) use
            of the filters.
        flops_target: a FLOPs reduction (e.g. 2.0) the network is held to from the start of path
            fine-tuning (``DecoupleConfig.path_finetune_epochs``, a whole number of epochs): there the
            gate threshold moves to the smallest τ at which the mean reduction over
            ``flops_target_images`` un-augmented training images reaches it (see
            :mod:`filterscope.methods.decoupling.threshold`), and the path fine-tuning then trains the network
            on exactly those paths. The sparsity term only aims at R on average and lands a little off
            (2.1–2.2× for R 0.45 on ResNet-56); 0: off (τ stays 0).
        flops_target_images: training images τ is chosen on (a fixed random subset, seeded).
    """

    use_mi: bool = True
    use_sparsity: bool = True
    recalibrate_bn_images: int = 10_000
    save_paths: bool = True
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    teacher_weights: str | None = None
    distill_phase: str = field(default="all", metadata={"choices": DISTILL_PHASES})
    flops_target: float = 0.0
    flops_target_images: int = 5000


def gate_param_groups(model: DecoupledModel, train_config: TrainConfig, decouple_config: DecoupleConfig) -> list[dict]:
    gate_ids = {id(p) for p in model.gate_parameters()}
    network = [p for p in model.parameters() if id(p) not in gate_ids and p.requires_grad]
    return [
        {"params": network, "lr": train_config.lr},
        {"params": model.gate_parameters(), "lr": train_config.lr * decouple_config.gate_lr_scale},
    ]


def flops_target_start(train_config: TrainConfig, config: DecoupleConfig, options: DecouplingRunOptions) -> int | None:
    """The epoch after which the threshold moves to ``options.flops_target`` (None: no target)."""
    if options.flops_target < 0 or 0 < options.flops_target <= 1:
        raise UserInputError(f"the FLOPs target must be a reduction above 1 (or 0 for none), got {options.flops_target}.")
    if not options.flops_target:
        return None
    finetune = config.path_finetune_epochs
    if not (finetune >= 1 and float(finetune).is_integer() and finetune < train_config.epochs):
        raise UserInputError(f"a FLOPs target is reached at the start of path fine-tuning; set path_finetune_epochs to a "
                             f"whole number of epochs between 1 and {train_config.epochs - 1} (got {finetune:g}).")
    return train_config.epochs - int(finetune)


def move_threshold_to_target(model: DecoupledModel, train_config: TrainConfig, options: DecouplingRunOptions,
                             mean, std, input_shape, recalibrate: Callable[[], None], *, first_step: float = 0.02,
                             expansions: int = 6, bisections: int = 6, tolerance: float = 0.02) -> float:
    """Shift ``model``'s gate threshold, in place, to the smallest τ meeting ``options.flops_target``
    on un-augmented training images (every process of a torchrun job finds the same τ: same images, same weights).

    Moving τ changes what the BatchNorms downstream see, and re-estimating their statistics
    (``recalibrate``) changes the gates' inputs and so the FLOPs again (on the digits CNN a τ giving
    1.50× gave 1.28× after it). The reduction that counts is the one after re-estimation, f(τ); each
    value of it costs a re-estimation, so a cheap search under the statistics as they stand
    (:func:`threshold_for_flops`) gives a first τ, and f is then bracketed around it (steps from
    ``first_step``, doubling) and bisected until it lies in [target, target · (1 + ``tolerance``)]
    or ``bisections`` are spent, keeping the smallest τ tried that meets the target. If none of them
    meets it, the one with the largest reduction stays. The model is left recalibrated.

    Returns:
        The reduction f reached on the search images.
    """
    plain_train, _ = load_data(train_config, mean, std, input_shape, train_config.num_classes, augment=False)
    chosen = torch.randperm(len(plain_train), generator=torch.Generator().manual_seed(train_config.seed))
    search = DataLoader(Subset(plain_train, chosen[: options.flops_target_images].tolist()), batch_size=256)
    device = next(model.parameters()).device
    target = options.flops_target
    start = model.gate_threshold
    tried: dict[float, float] = {}  # offset from ``start`` -> f, in the order tried (the model stands at the last)

    def reduction_after_reestimation(offset: float) -> float:
        shift_gate_threshold(model, start + offset - model.gate_threshold, in_place=True)
        recalibrate()
        tried.pop(offset, None)
        tried[offset] = collect_paths(model, search, device=device, progress=False, keep_paths=False).summary()["flops_reduction"]
        return tried[offset]

    def good(reduction: float) -> bool:
        return target <= reduction <= target * (1 + tolerance)

    recalibrate()  # the first guess is made under the statistics evaluation uses, not those of the noisy training gates
    guess = _first_threshold_guess(model, search, target, device)
    below, above = None, None  # offsets bracketing the target: f(below) < target <= f(above)
    offset, step = guess, first_step
    for _ in range(expansions + 1):
        reached = reduction_after_reestimation(offset)
        if good(reached):
            below = above = offset
            break
        if reached < target:
            below = offset
            if above is not None:
                break
            offset += step  # a higher threshold closes more gates
        else:
            above = offset
            if below is not None:
                break
            offset -= step
        step *= 2
    if below is not None and above is not None and below != above:
        for _ in range(bisections):
            middle = (below + above) / 2
            reached = reduction_after_reestimation(middle)
            if reached < target:
                below = middle
            else:
                above = middle
                if good(reached):
                    break
    meeting = [offset for offset, reduction in tried.items() if reduction >= target]
    best = min(meeting) if meeting else max(tried, key=tried.get)
    reached = tried[best] if best == list(tried)[-1] else reduction_after_reestimation(best)
    if reached < target:  # the run goes on (its epochs are not thrown away) at the largest reduction found
        warnings.warn(f"the gate threshold reached {reached:.3f}× fewer FLOPs, not the target {target:g}×, on "
                      f"{len(search.dataset)} training images; the path fine-tuning goes on from there. To reach it, "
                      f"train the gates longer or with a higher sparsity_ratio, or lower --flops-target.", stacklevel=2)
    if train_config.progress and distributed.is_main_process():
        tqdm.write(f"gate threshold moved to {model.gate_threshold:+.4f}: {reached:.3f}× fewer FLOPs on "
                   f"{len(search.dataset)} training images (target {target:g}×, {len(tried)} re-estimations)")
    return reached


def _first_threshold_guess(model: DecoupledModel, search: DataLoader, target: float, device, reach: float = 0.5) -> float:
    """The threshold offset meeting ``target`` under the statistics as they stand, searched in [-reach, reach];
    ``reach`` when not even that meets it (the bracketing expansion then goes higher)."""
    try:
        guess, _ = threshold_for_flops(model, search, target, low=-reach, high=reach, steps=12, device=device)
    except UserInputError:
        guess = reach
    return guess


class EpochPaths(PathCollector):
    """An epoch's FLOPs and filter states, measured on the pass that measures its accuracy.

    Its record is put together once, after the pass (under torchrun that gathers every process's
    rows), and kept: the epoch's metrics and, for the last epoch, the run's final record share it.
    """

    def __init__(self, model: DecoupledModel, **options):
        super().__init__(model, **options)
        self._record: PathRecord | None = None

    def record(self) -> PathRecord:
        if self._record is None:
            self._record = super().record()
        return self._record

    def metrics(self) -> dict[str, Any]:
        summary = self.record().summary()
        summary.pop("per_layer")
        return {"gated_" + key: value for key, value in summary.items()} | {"gate_threshold": self.model.gate_threshold}


def check_run_settings(train_config: TrainConfig, decouple_config: DecoupleConfig, options: DecouplingRunOptions,
                       model: nn.Module | None) -> None:
    """One clear error for settings of a decoupling run that cannot work together, before any data is read."""
    train_config.validate()
    decouple_config.validate()
    if model is not None and train_config.weights:
        raise UserInputError("pass either your own model or train_config.weights, not both; load the weights into the model first.")
    if options.distill_weight < 0 or options.distill_temperature <= 0:
        raise UserInputError("distill weight must be >= 0 and distill temperature > 0.")
    check_choices(options)
    if options.distill_phase == "path_finetune" and options.distill_weight > 0 and not decouple_config.path_finetune_epochs:
        raise UserInputError("distillation during path fine-tuning needs a path fine-tuning phase; set path_finetune_epochs > 0.")
    if options.teacher_weights and not options.distill_weight > 0:
        raise UserInputError("a teacher checkpoint was given without a distillation weight; set distill_weight > 0.")
    finetune = decouple_config.path_finetune_epochs
    if finetune and finetune >= train_config.epochs:  # the gates would be frozen from the first step, never trained
        raise UserInputError(f"path fine-tuning takes the last {finetune:g} epochs, which leaves none of the "
                             f"{train_config.epochs} epochs to train the gates; give more epochs or set "
                             f"path_finetune_epochs below {train_config.epochs} (0 for none).")
    flops_target_start(train_config, decouple_config, options)
    for checkpoint, flag in ((train_config.weights, "--weights"), (options.teacher_weights, "--teacher-weights")):
        if checkpoint:
            read_checkpoint(checkpoint, flag)  # missing, empty or corrupt: said before the data is decoded
            if model is None:
                check_weights_fit(train_config, checkpoint)  # another architecture: said before the data too


def teacher_for(train_config: TrainConfig, options: DecouplingRunOptions, base: nn.Module, own_model: nn.Module | None,
                num_classes: int) -> nn.Module | None:
    """The network to distil from: ``options.teacher_weights`` in ``base``'s architecture, else ``base`` itself
    (decouple() copied it; the teacher moves to the batch's device on use); None without distillation."""
    if not options.distill_weight > 0:
        return None
    if not options.teacher_weights:
        return base
    if own_model is None:
        return create_model(train_config.model, num_classes, options.teacher_weights)
    return load_weights(copy.deepcopy(own_model), options.teacher_weights)


def steps_per_epoch_of(train_config: TrainConfig, train_set) -> int:
    """Training steps per epoch, as the training loop counts its global step (the last partial batch dropped)."""
    steps = len(train_set) // train_config.batch_size
    return min(steps, train_config.max_steps_per_epoch) if train_config.max_steps_per_epoch else steps


def resumed_gate_threshold(train_config: TrainConfig, run_dir: str | Path) -> float:
    """The gate threshold of the checkpoint a resumed run in ``run_dir`` goes on from (its biases come
    with the weights; the record of their shift from here), else 0."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if train_config.resume and last.exists():
        return float(read_checkpoint(last).get("gate_threshold", 0.0))
    return 0.0


def upgrade_recorded_settings(run: RunDir) -> None:
    """Rewrite the ``decouple.yaml`` of a run begun by an earlier version under today's option names
    (:func:`upgrade_settings`), so that resuming it warns about settings that changed, not names."""
    path = run.path / "decouple.yaml"
    try:
        recorded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return
    if not isinstance(recorded, dict) or not all(isinstance(recorded.get(k), dict) for k in ("decouple", "options")):
        return
    upgraded = upgrade_settings({**recorded["decouple"], **recorded["options"]}, source=str(path))
    if upgraded == {**recorded["decouple"], **recorded["options"]}:
        return
    option_names = {f.name for f in fields(DecouplingRunOptions)}
    run.write_config({"decouple": {k: v for k, v in upgraded.items() if k not in option_names},
                      "options": {k: v for k, v in upgraded.items() if k in option_names}}, name="decouple.yaml")


def threshold_and_batchnorm_step(train_config: TrainConfig, options: DecouplingRunOptions, flops_target_epoch: int | None,
                                 normalization: tuple) -> Callable[[DecoupledModel, Any, int], None]:
    """What runs after each epoch's last step, before its evaluation: the BatchNorm statistics
    re-estimated under evaluation gates, and, at ``flops_target_epoch``, the threshold moved to the FLOPs target."""
    def before_evaluation(current: DecoupledModel, dataset, epoch: int) -> None:
        def recalibrate() -> None:
            recalibrate_batchnorm(current, dataset, options.recalibrate_bn_images, seed=train_config.seed + epoch,
                                  device=next(current.parameters()).device)

        if epoch + 1 == flops_target_epoch:  # the next step is path fine-tuning's first
            move_threshold_to_target(current, train_config, options, *normalization, recalibrate)
        else:
            recalibrate()

    return before_evaluation


def final_path_record(result, eval_set, train_config: TrainConfig) -> PathRecord:
    """The paths of the trained network over the evaluation split: those of the last epoch's pass,
    or, for a resumed run with no epoch left to train, measured once more."""
    # train() types its observer by the protocol; the one it hands back is an EpochPaths.
    if isinstance(result.last_observer, EpochPaths):  # the last epoch's pass saw the trained network on the whole split
        return result.last_observer.record()
    # Sharded only now: under torchrun the process group exists from train() on.
    eval_loader = DataLoader(distributed.shard_for_evaluation(eval_set), batch_size=256, shuffle=False)
    trained = result.model
    return collect_paths(trained, eval_loader, device=next(trained.parameters()).device, progress=train_config.progress,
                         sharded=True)


def run_decoupling(train_config: TrainConfig, decouple_config: DecoupleConfig,
                   options: DecouplingRunOptions | None = None, *, model: nn.Module | None = None) -> dict[str, Any]:
    """Decouple ``train_config.model`` (from ``train_config.weights``), or your own ``model``, and train it.

    Args:
        model: a pretrained network of your own to decouple instead of the registered
            ``train_config.model``; it is copied, never changed. The data is normalised with its
            ``input_mean``, ``input_std`` and ``input_shape`` attributes when it has all three, else
            as ``train_config.model``'s. Its checkpoints load with
            ``load_decoupled(path, base_model=<the same architecture>)``.

    Returns:
        The final summary (also in ``metrics.json`` under ``"decouple"``): accuracy, FLOPs, filter states.
    """
    options = options or DecouplingRunOptions()
    check_run_settings(train_config, decouple_config, options, model)
    mean, std, input_shape = input_normalization(train_config, model)
    train_set, eval_set = load_data(train_config, mean, std, input_shape, train_config.num_classes)
    num_classes = len(train_set.classes)
    # Seeded before the registered model is built (it is drawn at random when no weights are given; the
    # process's own generator is seeded at random) and so before the gates' random W1 and the classifiers W_cla.
    torch.manual_seed(train_config.seed)
    base = model if model is not None else create_model(train_config.model, num_classes, train_config.weights)
    decoupled = DecoupledModel(base, decouple_config, num_classes=num_classes, input_shape=input_shape,
                               model_name=train_config.model if model is None else None, input_mean=mean, input_std=std,
                               gate_threshold=resumed_gate_threshold(train_config, train_config.run_dir))
    objective = DecouplingObjective(decoupled, steps_per_epoch_of(train_config, train_set), total_epochs=train_config.epochs,
                                    use_mi=options.use_mi, use_sparsity=options.use_sparsity,
                                    teacher=teacher_for(train_config, options, base, model, num_classes),
                                    distill_weight=options.distill_weight, distill_temperature=options.distill_temperature,
                                    distill_phase=options.distill_phase, compile_teacher=train_config.compile)
    run = RunDir(train_config.run_dir)  # created once the model, its gates and the teacher are built: a bad one leaves no folder
    recorded_settings = {"decouple": asdict(decoupled.config), "options": asdict(options)}
    if train_config.resume and (run.checkpoints / "last.pt").exists() and distributed.is_main_process():
        upgrade_recorded_settings(run)
        warn_if_settings_changed(run, recorded_settings, "decouple.yaml")
    run.write_config(recorded_settings, name="decouple.yaml")
    result = train(
        train_config,
        model=decoupled,
        objective=objective,
        param_groups=lambda m: gate_param_groups(m, train_config, decoupled.config),
        # The last epoch keeps its paths: its pass is the final record's (see final_path_record).
        observe_evaluation=lambda current, epoch: EpochPaths(current, keep_paths=epoch + 1 == train_config.epochs, sharded=True),
        checkpoint_extra=lambda m: {**decoupled_metadata(m), "decouple_schedule": schedule_settings(m.config)},
        before_evaluation=threshold_and_batchnorm_step(train_config, options, flops_target_start(train_config, decoupled.config, options),
                                                       (mean, std, input_shape)),
        metrics_key="decouple",
    )
    record = final_path_record(result, eval_set, train_config)
    summary = {
        "model": train_config.model if model is None else type(model).__name__,
        "data": train_config.data,
        "epochs": train_config.epochs,
        "decouple_config": asdict(result.model.config),
        "options": asdict(options),
        **record.summary(),
        "history": result.history,
    }
    write_path_record(record, run, train_config.eval_split, save_paths=options.save_paths)
    if distributed.is_main_process():  # every process holds the same summary; one writes it
        run.update_metrics("decouple", summary)
    return summary
