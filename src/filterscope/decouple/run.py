"""Decoupled training through the common training loop: ``filterscope decouple``.

The pretrained network is decoupled, then trained with L = CE + λm·L_mi + λk·L_kl + λs·L_s. After
every epoch the BatchNorm statistics can be re-estimated under evaluation gates, and the epoch log
holds the accuracy, each loss term, the active-filter fraction per layer, the filter states and the
mean FLOPs per image — all measured with evaluation (hard, noise-free) gates.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..analysis.checkpoint_paths import write_path_record
from ..analysis.paths import collect_paths
from ..errors import UserInputError
from ..models import create_model, load_weights
from ..rundir import RunDir
from ..train import TrainConfig, input_normalization, load_data, shard_for_evaluation, train
from .batchnorm import recalibrate_batchnorm
from .config import DecoupleConfig
from .objective import DecouplingObjective
from .wrap import DecoupledModel, decouple, decoupled_metadata


@dataclass
class DecouplingRunOptions:
    """Choices of a decoupling run beyond the training loop and the loss weights.

    Attributes:
        use_mi, use_kl, use_sparsity: switch single loss terms off (the paper's Table 7 ablation).
        recalibrate_bn_images: training images used to re-estimate BatchNorm statistics under
            evaluation gates after every epoch (0 turns it off).
        save_paths: write the test split's bit-packed calculation paths after training.
        distill_weight: λd of a distillation term from the network as it was before decoupling
            (0: off; see DecouplingObjective).
        distill_temperature: T of that term.
        teacher_weights: a checkpoint of the same architecture to distil from instead (for example
            the dense network fine-tuned with the same schedule); None: the starting weights.
    """

    use_mi: bool = True
    use_kl: bool = True
    use_sparsity: bool = True
    recalibrate_bn_images: int = 10_000
    save_paths: bool = True
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    teacher_weights: str | None = None


def gate_param_groups(model: DecoupledModel, train_config: TrainConfig, decouple_config: DecoupleConfig) -> list[dict]:
    gate_ids = {id(p) for p in model.gate_parameters()}
    network = [p for p in model.parameters() if id(p) not in gate_ids and p.requires_grad]
    return [
        {"params": network, "lr": train_config.lr},
        {"params": model.gate_parameters(), "lr": train_config.lr * decouple_config.gate_lr_scale},
    ]


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
    train_config.validate()
    if model is not None and train_config.weights:
        raise UserInputError("pass either your own model or train_config.weights, not both; load the weights into the model first.")
    mean, std, input_shape = input_normalization(train_config, model)
    train_set, eval_set = load_data(train_config, mean, std, input_shape, train_config.num_classes)
    num_classes = len(train_set.classes)
    base = model if model is not None else create_model(train_config.model, num_classes, train_config.weights)
    torch.manual_seed(train_config.seed)  # the gates' random W1 and the classifiers W_cla come from the seed too
    decoupled = decouple(base, decouple_config, num_classes=num_classes, input_shape=input_shape,
                         model_name=train_config.model if model is None else None)
    decoupled.input_mean, decoupled.input_std = mean, std  # how train() normalises the data for it
    steps_per_epoch = len(train_set) // train_config.batch_size  # as the training loop counts its global step
    if train_config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, train_config.max_steps_per_epoch)
    if options.distill_weight < 0 or options.distill_temperature <= 0:
        raise UserInputError("distill weight must be >= 0 and distill temperature > 0.")
    teacher = None
    if options.distill_weight > 0:  # decouple() copied base; the teacher moves to the batch's device on use
        teacher = base
        if options.teacher_weights:
            teacher = (create_model(train_config.model, num_classes, options.teacher_weights) if model is None
                       else load_weights(copy.deepcopy(model), options.teacher_weights))
    elif options.teacher_weights:
        raise UserInputError("a teacher checkpoint was given without a distillation weight; set distill_weight > 0.")
    objective = DecouplingObjective(decoupled, steps_per_epoch, total_epochs=train_config.epochs, use_mi=options.use_mi, use_kl=options.use_kl,
                                    use_sparsity=options.use_sparsity, teacher=teacher,
                                    distill_weight=options.distill_weight, distill_temperature=options.distill_temperature)
    eval_loader = DataLoader(shard_for_evaluation(eval_set), batch_size=256, shuffle=False)

    def before_evaluation(current: DecoupledModel, dataset, epoch: int) -> None:
        recalibrate_batchnorm(current, dataset, options.recalibrate_bn_images, seed=train_config.seed + epoch,
                              device=next(current.parameters()).device)

    def epoch_metrics(current: DecoupledModel, epoch: int) -> dict:
        summary = collect_paths(current, eval_loader, device=next(current.parameters()).device,
                                progress=False, keep_paths=False).summary()
        summary.pop("per_layer")
        return {"gated_" + key: value for key, value in summary.items()}

    run = RunDir(train_config.run_dir)
    run.write_config({"decouple": asdict(decoupled.config), "options": asdict(options)}, name="decouple.yaml")
    result = train(
        train_config,
        model=decoupled,
        objective=objective,
        param_groups=lambda m: gate_param_groups(m, train_config, decoupled.config),
        epoch_metrics=epoch_metrics,
        checkpoint_extra=decoupled_metadata,
        before_evaluation=before_evaluation,
        metrics_key="decouple",
    )
    trained: DecoupledModel = result.model
    record = collect_paths(trained, eval_loader, device=next(trained.parameters()).device, progress=train_config.progress)
    summary = {
        "model": train_config.model if model is None else type(model).__name__,
        "data": train_config.data,
        "epochs": train_config.epochs,
        "decouple_config": asdict(trained.config),
        "options": asdict(options),
        **record.summary(),
        "history": result.history,
    }
    write_path_record(record, run, train_config.eval_split, save_paths=options.save_paths)
    run.update_metrics("decouple", summary)
    return summary
