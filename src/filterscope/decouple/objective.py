"""The decoupled-training objective L = CE + λm·L_mi + λk·L_kl + λs·L_s for the training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .losses import kl_gate_response, mutual_information_loss, sparsity_loss
from .wrap import DecoupledModel


def unwrap(model: nn.Module) -> DecoupledModel:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, DecoupledModel):
        raise TypeError("the decoupling objective needs a DecoupledModel (see filterscope.decouple.decouple)")
    return inner


class DecouplingObjective:
    """Callable (model, images, labels) → (loss, logits, terms) for :func:`filterscope.train.train`.

    Args:
        layer_ratios: R^l for every gated layer.
        steps_per_epoch: to turn ``sparsity_warmup_epochs`` into steps.
        use_mi, use_kl, use_sparsity: switch single terms off (the paper's Table 7 ablation).
    """

    def __init__(self, model: DecoupledModel, steps_per_epoch: int, *, use_mi: bool = True,
                 use_kl: bool = True, use_sparsity: bool = True):
        self.config = model.config
        self.layer_ratios = layer_ratios_for(model)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.use_mi, self.use_kl, self.use_sparsity = use_mi, use_kl, use_sparsity

    def sparsity_weight(self, step: int) -> float:
        warmup = self.config.sparsity_warmup_epochs * self.steps_per_epoch
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return self.config.lambda_sparsity * factor

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, step: int = 0):
        logits = model(images)
        decoupled = unwrap(model)
        gates = decoupled.last_gates()
        ce = F.cross_entropy(logits, labels)
        terms = {"ce": ce}
        total = ce
        config = self.config
        if self.use_mi:
            gate_side, classifier_side = mutual_information_loss(
                gates, labels, decoupled.mi_classifiers, config.mi_classifier_full_rate
            )
            terms["mi"] = gate_side
            terms["mi_classifier"] = classifier_side
            total = total + config.lambda_mi * gate_side + classifier_side
        if self.use_kl:
            kl = sum(
                kl_gate_response(z, slot.response.detach() if config.kl_detach_response else slot.response, config.kl_epsilon)
                for z, slot in zip(gates, decoupled.slots)
            )
            terms["kl"] = kl
            total = total + config.lambda_kl * kl
        if self.use_sparsity:
            sparse_gates = gates if config.sparsity_on == "noisy" else [slot.evaluation_gates() for slot in decoupled.slots]
            sparsity = sum(sparsity_loss(z, r, config.sparsity_form) for z, r in zip(sparse_gates, self.layer_ratios))
            terms["sparsity"] = sparsity
            total = total + self.sparsity_weight(step) * sparsity
        with torch.no_grad():
            terms["gates_mean"] = torch.cat([z.mean(0) for z in gates]).mean()
        return total, logits, terms


def layer_ratios_for(model: DecoupledModel) -> list[float]:
    """R per gated layer; a list as long as *all* conv units is indexed by unit position (Table 5's VGG-16)."""
    ratio = model.config.sparsity_ratio
    if isinstance(ratio, list) and len(ratio) == len(model.all_unit_names) != len(model.gated_units):
        return [float(ratio[i]) for i in model.gated_unit_indices]
    return model.config.layer_ratios(len(model.gated_units))
