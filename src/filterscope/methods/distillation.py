"""Knowledge distillation (Hinton et al., 2015): a network also learns a frozen teacher's softened outputs.

Used by decoupled training (``DecouplingObjective``) and by any plain training run (``DistillationObjective``,
e.g. fine-tuning a statically pruned network), so that both sides of a comparison can get the same teacher.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Teacher:
    """A frozen network whose outputs at temperature T a student learns: λd·T²·KL(teacher ‖ student).

    Args:
        network: the teacher; a copy of it is kept, in evaluation mode with gradients off (the
            caller's module is left as it was). The copy moves to the batch's device on use.
        weight: λd.
        temperature: T.
        compile: run the teacher's forward pass through ``torch.compile`` (inference only). Set it when
            the student is compiled: an eager teacher beside a compiled student costs more than its own
            forward pass, the two thread pools taking turns (``benchmarks/overhead/distill_overhead.py``).
    """

    def __init__(self, network: nn.Module, weight: float = 1.0, temperature: float = 4.0, compile: bool = False):
        if weight <= 0 or temperature <= 0:
            raise ValueError("distillation weight and temperature must be > 0")
        self.network = copy.deepcopy(network).eval().requires_grad_(False)
        self.weight, self.temperature = weight, temperature
        self.forward = torch.compile(self.network) if compile else self.network

    def loss(self, images: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """T²·KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (not yet multiplied by λd)."""
        with torch.no_grad():
            if next(self.network.parameters()).device != images.device:
                self.network.to(images.device)
            teacher_logits = self.forward(images)
        temperature = self.temperature
        return F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                        reduction="batchmean", log_target=True) * temperature**2

    def weighted_loss(self, images: torch.Tensor, student_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the distillation term, λd times it): the first to record, the second to add to the loss."""
        distill = self.loss(images, student_logits)
        return distill, self.weight * distill


class DistillationObjective:
    """(model, images, labels, step) → (CE + λd·distillation, logits, terms) for :func:`filterscope.training.train.train`."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, step: int = 0):
        logits = model(images)
        ce = F.cross_entropy(logits, labels)
        distill, weighted = self.teacher.weighted_loss(images, logits)
        return ce + weighted, logits, {"ce": ce, "distill": distill}
