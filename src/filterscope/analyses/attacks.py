"""Adversarial images from captum's FGSM and PGD, in the pixel space of the un-normalised image.

The data arrive normalised with the model's mean and std, x = (p − mean) / std with pixels p ∈ [0, 1]. An
L∞ budget ε of "8/255" means 8 grey levels of p, not of x, so the attack runs on p through the model's own
normalisation (:class:`PixelSpaceModel`) and clamps p' to [0, 1]:

    FGSM (Goodfellow et al., 2015), untargeted:  p' = clip[0,1](p + ε · sign ∇_p L(f(p), y))
    FGSM targeted on t:                          p' = clip[0,1](p − ε · sign ∇_p L(f(p), t))
    PGD (Madry et al., 2018): T steps of size α of the same rule, each projected back onto ‖p' − p‖∞ ≤ ε.

L is the cross-entropy of the logits. Captum's FGSM changes a pixel only where |∇| exceeds its
``zero_thresh`` (10⁻⁶ by default); on confidently classified images the softmax saturates, most gradients
fall below that, and the attack leaves those pixels alone — weaker than the FGSM of the paper. Here the
threshold is 0 by default (:attr:`AttackConfig.zero_gradient_threshold`), which is exactly the standard rule
(sign 0 leaves a pixel with zero gradient unchanged in both); PGD's inner FGSM gets the same threshold.

The model is attacked as it is (a decoupled model with its evaluation gates, whose hard gates pass no
gradient; the gradient flows through the open filters). Its training flag is set to evaluation for the
attack and restored afterwards, module by module; nothing else of it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserInputError
from ..core.eval_mode import evaluation_mode

ATTACKS = ("fgsm", "pgd")


@dataclass
class AttackConfig:
    """How adversarial images are made.

    Attributes:
        method: ``"fgsm"`` or ``"pgd"``.
        eps: L∞ budget ε in pixel units of the un-normalised image, in (0, 1] (8/255 by default).
        steps: PGD's number of steps T.
        step_size: PGD's step α; None: 2.5 · ε / T (Madry et al.), so that T steps can cross the ball.
        random_start: PGD starts from a uniform random point of the ε-ball (seeded by ``seed``).
        zero_gradient_threshold: captum's ``zero_thresh``; 0 gives the standard attack (see the module).
        batch_size: images attacked at once.
        seed: seed of PGD's random start.
    """

    method: str = "fgsm"
    eps: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    random_start: bool = False
    zero_gradient_threshold: float = 0.0
    batch_size: int = 128
    seed: int = 0

    def validate(self) -> "AttackConfig":
        if self.method not in ATTACKS:
            raise UserInputError(f"unknown attack {self.method!r}; pass one of {', '.join(ATTACKS)}.")
        if not 0.0 < self.eps <= 1.0:
            raise UserInputError(f"eps {self.eps} is outside (0, 1]; give the L∞ budget in pixel units of the "
                                 "un-normalised image, e.g. 0.0314 for 8/255.")
        if self.steps < 1:
            raise UserInputError(f"the PGD steps must be at least 1, got {self.steps}.")
        if self.step_size is not None and self.step_size <= 0:
            raise UserInputError(f"the PGD step size must be positive, got {self.step_size}; omit it for 2.5·eps/steps.")
        if self.zero_gradient_threshold < 0:
            raise UserInputError("zero_gradient_threshold must be at least 0; pass 0 for the standard attack.")
        if self.batch_size < 1:
            raise UserInputError(f"the attack batch size must be at least 1, got {self.batch_size}.")
        return self

    @property
    def pgd_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@dataclass
class AttackResult:
    """Adversarial versions of a set of images and what the model made of them.

    Attributes:
        adversarial: the adversarial images, normalised like the inputs, (N, C, H, W).
        labels: true classes (N,).
        targets: the target class of a targeted attack per image, or None (untargeted).
        clean_predictions, adversarial_predictions: the model's argmax on the clean and adversarial images.
        config: the attack's settings.
    """

    adversarial: torch.Tensor
    labels: np.ndarray
    targets: np.ndarray | None
    clean_predictions: np.ndarray
    adversarial_predictions: np.ndarray
    config: AttackConfig = field(default_factory=AttackConfig)

    @property
    def eligible(self) -> np.ndarray:
        """Images the model classified correctly before the attack (the only ones an attack can fool)."""
        return self.clean_predictions == self.labels

    @property
    def success(self) -> np.ndarray:
        """Correctly classified images whose adversarial reached the target (targeted) or any wrong class."""
        reached = (self.adversarial_predictions == self.targets) if self.targets is not None else \
            (self.adversarial_predictions != self.labels)
        return self.eligible & reached

    def summary(self) -> dict:
        eligible, success = int(self.eligible.sum()), int(self.success.sum())
        return {"method": self.config.method, "eps": self.config.eps, "targeted": self.targets is not None,
                "images": int(len(self.labels)), "correct_before": eligible, "successful": success,
                "success_rate": success / eligible if eligible else 0.0,
                "dropped_misclassified_before": int(len(self.labels) - eligible),
                "dropped_attack_failed": eligible - success}


class PixelSpaceModel(nn.Module):
    """``model((p − mean) / std)``: the model seen from pixels p ∈ [0, 1] (the model is held, not copied)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        object.__setattr__(self, "model", model)  # not a submodule: the wrapper owns no parameters
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[None, :, None, None])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.std + self.mean).clamp(0.0, 1.0)

    def to_inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def cross_entropy_per_image(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """L(f(p), y) per image (captum takes the gradient of each image's own loss)."""
    return F.cross_entropy(logits, classes, reduction="none")


def _captum():
    try:
        from captum.robust import FGSM, PGD
    except ImportError:
        raise UserInputError("the attacks need captum, a dependency of filterscope that is missing here; "
                             "pip install 'captum>=0.7'.") from None
    return FGSM, PGD


def perturb_pixels(model: PixelSpaceModel, pixels: torch.Tensor, classes: torch.Tensor, config: AttackConfig,
                   targeted: bool) -> torch.Tensor:
    """One batch of adversarial pixels from captum (``classes``: true labels, or the targets when ``targeted``)."""
    FGSM, PGD = _captum()
    with warnings.catch_warnings():  # PGD hands its inner FGSM detached steps; captum warns that it sets requires_grad
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
        return _perturb(FGSM, PGD, model, pixels, classes, config, targeted)


def _perturb(FGSM, PGD, model, pixels, classes, config: AttackConfig, targeted: bool) -> torch.Tensor:
    if config.method == "fgsm":
        fgsm = FGSM(model, cross_entropy_per_image, lower_bound=0.0, upper_bound=1.0)
        fgsm.zero_thresh = config.zero_gradient_threshold
        return fgsm.perturb(pixels, epsilon=config.eps, target=classes, targeted=targeted).detach()
    pgd = PGD(model, cross_entropy_per_image, lower_bound=0.0, upper_bound=1.0)
    pgd.fgsm.zero_thresh = config.zero_gradient_threshold
    return pgd.perturb(pixels, radius=config.eps, step_size=config.pgd_step_size, step_num=config.steps,
                       target=classes, targeted=targeted, random_start=config.random_start, norm="Linf").detach()


def attack(model: nn.Module, images: torch.Tensor, labels: Sequence[int] | torch.Tensor, *, mean: Sequence[float],
           std: Sequence[float], config: AttackConfig | None = None,
           targets: Sequence[int] | torch.Tensor | None = None) -> AttackResult:
    """Adversarial versions of ``images`` (normalised with ``mean``/``std``) against ``model``.

    Args:
        model: any classifier of normalised images (a decoupled model, its dense network, any CNN).
        images: (N, C, H, W), normalised as the model expects.
        labels: the true classes.
        mean, std: the normalisation of ``images`` (per channel); the attack runs on the pixels.
        config: the attack (FGSM by default, ε = 8/255).
        targets: per image, the class a targeted attack pushes it to; None for an untargeted attack.

    Returns:
        The adversarial images (normalised) with the predictions before and after.
    """
    config = (config or AttackConfig()).validate()
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if targets is not None:
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if len(labels) != len(images) or (targets is not None and len(targets) != len(images)):
        raise UserInputError(f"{len(images)} images need as many labels (and targets), got {len(labels)}.")
    device = next(model.parameters()).device
    pixel_model = PixelSpaceModel(model, mean, std).to(device)
    if config.random_start:
        torch.manual_seed(config.seed)
    adversarial, clean_predictions, adversarial_predictions = [], [], []
    with evaluation_mode(model):
        for start in range(0, len(images), config.batch_size):
            batch = slice(start, start + config.batch_size)
            pixels = pixel_model.to_pixels(images[batch].to(device))
            classes = (targets if targets is not None else labels)[batch].to(device)
            perturbed = perturb_pixels(pixel_model, pixels, classes, config, targeted=targets is not None)
            with torch.no_grad():
                clean_predictions.append(pixel_model(pixels).argmax(1).cpu())
                adversarial_predictions.append(pixel_model(perturbed).argmax(1).cpu())
            adversarial.append(pixel_model.to_inputs(perturbed).cpu())
    empty = torch.zeros(0, dtype=torch.long)
    return AttackResult(
        adversarial=torch.cat(adversarial) if adversarial else images[:0].clone(),
        labels=labels.numpy(), targets=None if targets is None else targets.numpy(),
        clean_predictions=torch.cat(clean_predictions or [empty]).numpy(),
        adversarial_predictions=torch.cat(adversarial_predictions or [empty]).numpy(), config=config)
