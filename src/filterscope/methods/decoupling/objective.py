"""The decoupled-training objective L = CE + λm·L_mi + λk·L_kl + λs·L_s (Li et al., 2020, Eq. 12) for the training loop.

Each term is returned by name with the step's loss, unweighted, so that a run's log shows them:
``ce``, ``mi`` (L_mi as the gates see it), ``mi_classifier`` (the classifiers' own cross-entropy,
weight 1, see :func:`.losses.mutual_information_loss`), ``kl``, ``sparsity`` (L_s), and, with a
teacher, ``distill``. The loss is ce + λm·mi + mi_classifier + λk·kl + λs(t)·sparsity (+ λd·distill),
where λs(t) is λs under its warm-up (:meth:`DecouplingObjective.sparsity_weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distillation import Teacher
from .losses import kl_gate_response, mutual_information_loss, network_sparsity_loss, sparsity_loss
from .model import DecoupledModel


def unwrap(model: nn.Module) -> DecoupledModel:
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    inner = inner.module if isinstance(inner, nn.parallel.DistributedDataParallel) else inner
    if not isinstance(inner, DecoupledModel):
        raise TypeError("the decoupling objective needs a DecoupledModel (see filterscope.methods.decoupling.decouple)")
    return inner


class DecouplingObjective:
    """Callable (model, images, labels) → (loss, logits, terms) for :func:`filterscope.training.train.train`.

    Args:
        layer_ratios: R^l for every gated layer.
        steps_per_epoch: to turn ``sparsity_warmup_epochs`` and ``sparsity_ratio_ramp_epochs`` into steps.
        total_epochs: the run's length, to place the last ``path_finetune_epochs`` (None: no such phase).
        use_mi, use_sparsity: switch single terms off (the paper's Table 7 ablation); L_kl is off
            where the config's λk is 0.
        teacher: a frozen network whose softened outputs the decoupled one also learns
            (knowledge distillation, Hinton et al., 2015; not in the paper): the term
            λd·T²·KL(softmax(t/T) ‖ softmax(s/T)) is added to L.
        distill_weight, distill_temperature: λd and T of that term.
        distill_phase: ``"all"``: the term applies at every step; ``"path_finetune"``: only during
            path fine-tuning, while the gates are frozen.
        compile_teacher: the teacher's forward pass through ``torch.compile`` (see :class:`Teacher`).
    """

    def __init__(self, model: DecoupledModel, steps_per_epoch: int, *, total_epochs: int | None = None, use_mi: bool = True,
                 use_sparsity: bool = True, teacher: nn.Module | None = None,
                 distill_weight: float = 0.0, distill_temperature: float = 4.0, distill_phase: str = "all",
                 compile_teacher: bool = False):
        self.config = model.config
        self.layer_ratios = layer_ratios_for(model)
        self.layer_flops = model.cost_model.layer_flops()  # the "network" sparsity form's weights
        self.steps_per_epoch = max(1, steps_per_epoch)
        finetune = self.config.path_finetune_epochs
        if finetune > 0 and total_epochs is None:
            raise ValueError("path_finetune_epochs needs the run's total_epochs")
        self.path_finetune_from = (
            round((total_epochs - finetune) * self.steps_per_epoch) if finetune > 0 else None
        )
        self.use_mi, self.use_kl, self.use_sparsity = use_mi, self.config.lambda_kl > 0, use_sparsity
        self.teacher = (Teacher(teacher, distill_weight, distill_temperature, compile=compile_teacher)
                        if teacher is not None and distill_weight > 0 else None)
        self.distill_phase = distill_phase
        model.set_response_recording(self.use_kl)

    def sparsity_weight(self, step: int) -> float:
        """λs at this step: rising linearly from λs/W to λs over the W warm-up steps, then λs."""
        warmup = self.config.sparsity_warmup_epochs * self.steps_per_epoch
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return self.config.lambda_sparsity * factor

    def ratios_at(self, step: int) -> list[float]:
        """R^l at this step: fixed, or on the cubic ramp from 1 (``sparsity_ratio_ramp_epochs``)."""
        ramp = self.config.sparsity_ratio_ramp_epochs * self.steps_per_epoch
        if ramp <= 0:
            return self.layer_ratios
        remaining = max(0.0, 1.0 - (step + 1) / ramp) ** 3
        return [r + (1.0 - r) * remaining for r in self.layer_ratios]

    def in_path_finetune(self, step: int) -> bool:
        return self.path_finetune_from is not None and step >= self.path_finetune_from

    def leaves_parameters_unused(self, step: int) -> bool:
        """During path fine-tuning the gates and the mutual-information classifiers get no gradient
        (the training loop then tells DistributedDataParallel to expect that)."""
        return self.in_path_finetune(step)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, step: int = 0):
        decoupled = unwrap(model)
        finetune = self.in_path_finetune(step)
        if decoupled.frozen_paths != finetune:  # set from the step, so a resumed run lands in the right phase
            decoupled.set_frozen_paths(finetune)
        logits = model(images)
        gates = decoupled.last_gates()
        ce = F.cross_entropy(logits, labels)
        terms = {"ce": ce}
        total = ce
        if not finetune:  # frozen paths: the cross-entropy (and distillation) alone
            total = total + self._gate_losses(decoupled, gates, labels, step, terms)
        if finetune or self.distill_phase == "all":
            total = total + self._distillation(images, logits, terms)
        with torch.no_grad():
            terms["gates_mean"] = torch.cat([z.mean(0) for z in gates]).mean()
        return total, logits, terms

    def _gate_losses(self, decoupled: DecoupledModel, gates: list[torch.Tensor], labels: torch.Tensor, step: int,
                     terms: dict) -> torch.Tensor | float:
        """λm·L_mi (+ the classifiers' own term) + λk·L_kl + λs·L_s, each recorded in ``terms``."""
        config = self.config
        total = 0.0
        if self.use_mi:
            gate_side, classifier_side = mutual_information_loss(gates, labels, decoupled.mi_classifiers)
            terms["mi"] = gate_side
            terms["mi_classifier"] = classifier_side
            total = total + config.lambda_mi * gate_side + classifier_side
        if self.use_kl:
            kl = sum(kl_gate_response(z, slot.response.detach()) for z, slot in zip(gates, decoupled.slots))
            terms["kl"] = kl
            total = total + config.lambda_kl * kl
        if self.use_sparsity:
            sparse_gates = gates if config.sparsity_on == "noisy" else [slot.evaluation_gates() for slot in decoupled.slots]
            ratios = self.ratios_at(step)
            if config.sparsity_form == "network":
                sparsity = network_sparsity_loss(sparse_gates, ratios, self.layer_flops)
            else:
                sparsity = sum(sparsity_loss(z, r, config.sparsity_form) for z, r in zip(sparse_gates, ratios))
            terms["sparsity"] = sparsity
            terms["sparsity_target"] = torch.tensor(sum(ratios) / len(ratios))
            total = total + self.sparsity_weight(step) * sparsity
        return total

    def _distillation(self, images: torch.Tensor, logits: torch.Tensor, terms: dict) -> torch.Tensor | float:
        """λd·(distillation term), recorded in ``terms``; 0 without a teacher."""
        if self.teacher is None:
            return 0.0
        terms["distill"], weighted = self.teacher.weighted_loss(images, logits)
        return weighted


def layer_ratios_for(model: DecoupledModel) -> list[float]:
    """R per gated layer; a list as long as *all* conv units is indexed by unit position (Table 5's VGG-16)."""
    ratio = model.config.sparsity_ratio
    if isinstance(ratio, list) and len(ratio) == len(model.all_unit_names) != len(model.gated_units):
        return [float(ratio[i]) for i in model.gated_unit_indices]
    return model.config.layer_ratios(len(model.gated_units))
