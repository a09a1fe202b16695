"""Evaluation: top-1 accuracy, per-class accuracy and mean cross-entropy over a data loader."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.distributed import all_reduce_sum


@dataclass
class EvalResult:
    """What one evaluation pass measured.

    Attributes:
        accuracy: top-1 accuracy over all samples, in [0, 1].
        per_class_accuracy: recall of each class, in [0, 1] (NaN for a class with no samples).
        loss: mean cross-entropy.
        num_samples: samples evaluated.
        confusion: (classes × classes) counts, rows = true class, columns = predicted class.
    """

    accuracy: float
    per_class_accuracy: list[float]
    loss: float
    num_samples: int
    confusion: list[list[int]] = field(repr=False, default_factory=list)

    def to_dict(self, classes: list[str] | None = None) -> dict:
        result = {
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "loss": self.loss,
            "num_samples": self.num_samples,
        }
        if classes is not None:
            result["classes"] = list(classes)
        return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "eval",
    observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` in evaluation mode on every batch of ``loader``.

    The model's training flag is restored afterwards. Under ``torchrun`` each process
    evaluates its shard and the counts are summed.

    Args:
        observe: called with ``(labels, logits)`` after every batch's forward pass, so that a caller
            can measure more from the same pass (e.g. the gates a decoupled model just used).
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for images, labels in tqdm(loader, desc=description, disable=not progress, leave=False):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            if observe is not None:
                observe(labels, logits)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            predictions = logits.argmax(1)
            confusion.index_put_(
                (labels, predictions), torch.ones_like(labels, dtype=torch.float64), accumulate=True
            )
    finally:
        model.train(was_training)
    all_reduce_sum(confusion)
    all_reduce_sum(loss_sum)
    counts = confusion.cpu().numpy()
    total = counts.sum()
    per_class_total = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(counts) / per_class_total
    return EvalResult(
        accuracy=float(np.trace(counts) / max(total, 1)),
        per_class_accuracy=[float(v) for v in per_class],
        loss=float(loss_sum.item() / max(total, 1)),
        num_samples=int(total),
        confusion=counts.astype(np.int64).tolist(),
    )


def evaluate_checkpoint(
    model_name: str,
    weights: str | None,
    data: str,
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str = "cpu",
    val_fraction: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Build a registered model, load ``weights`` and evaluate it on a split of ``data``.

    ``weights`` may also be a decoupled checkpoint (``filterscope decouple``): the decoupled model is rebuilt
    and evaluated with its evaluation gates, on inputs normalised as its run normalised them.

    Returns:
        ``EvalResult.to_dict`` plus the model, data and split names.
    """
    from torch.utils.data import DataLoader

    from ..core.distributed import resolve_device
    from ..data import load_dataset
    from ..methods.decoupling.checkpoint import DECOUPLED_FORMAT
    from ..models import model_spec
    from ..models.checkpoint import read_checkpoint

    torch_device = resolve_device(device)
    payload = read_checkpoint(weights) if weights is not None else {}
    if payload.get("format") == DECOUPLED_FORMAT:  # a decoupled model: evaluated with its evaluation gates
        model, dataset = _decoupled_model_and_data(weights, payload, model_name, data, split, val_fraction, seed)
        num_classes = len(dataset.classes)
    else:
        spec = model_spec(model_name)
        dataset = load_dataset(
            data, split, mean=spec.mean, std=spec.std, val_fraction=val_fraction, seed=seed,
            expected_image_shape=spec.input_shape,
        )
        num_classes = len(dataset.classes)
        model = _model_with_weights(model_name, weights, payload, num_classes, seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    result = evaluate(model.to(torch_device), loader, num_classes, device=torch_device, progress=progress)
    return {"model": model_name, "weights": weights, "data": data, "split": split, **result.to_dict(dataset.classes)}


def _model_with_weights(model_name: str, weights: str | None, payload: dict, num_classes: int, seed: int):
    """The registered model with the checkpoint ``payload`` (read from ``weights``) loaded, after checking it fits."""
    from ..core.errors import UserInputError
    from ..models import create_model
    from ..models.checkpoint import check_state_dict_fits, extract_state_dict

    # This torch seeds its process generator at random: unseeded, the fresh weights evaluated when no checkpoint
    # is given, and so the numbers, would differ from call to call. The caller's random stream is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(model_name, num_classes)
    if weights is None:
        warnings.warn(f"no weights given: evaluating a randomly initialised {model_name} (seed {seed}); "
                      "pass weights (--weights) to evaluate a trained one.", stacklevel=3)
        return model
    state = extract_state_dict(payload)
    final_layer = [k for k, v in state.items() if v.ndim == 2 and k.endswith("weight")]
    if final_layer and state[final_layer[-1]].shape[0] != num_classes:
        raise UserInputError(
            f"checkpoint {weights!r} has {state[final_layer[-1]].shape[0]} classes but the data set has "
            f"{num_classes}; evaluate it on data with the classes it was trained on."
        )
    check_state_dict_fits(model, state, str(weights))
    model.load_state_dict(state, strict=False)
    return model


def _decoupled_model_and_data(weights: str, payload: dict, model_name: str, data: str, split: str,
                              val_fraction: float, seed: int):
    """A decoupled checkpoint, rebuilt with its gates, and the split normalised as its run normalised it."""
    from ..core.errors import UserInputError
    from ..data import load_dataset
    from ..methods.decoupling.checkpoint import load_decoupled
    from ..models import model_spec

    base_model = payload.get("base_model")
    if base_model and model_name and model_name != base_model:
        raise UserInputError(f"{weights!r} is a decoupled {base_model}, not a {model_name}; pass --model {base_model}.")
    model = load_decoupled(weights)
    mean, std = getattr(model, "input_mean", None), getattr(model, "input_std", None)
    if mean is None or std is None:
        spec = model_spec(base_model or model_name)
        mean, std = spec.mean, spec.std
    dataset = load_dataset(data, split, mean=mean, std=std, val_fraction=val_fraction, seed=seed,
                           expected_image_shape=tuple(model.input_shape), expected_num_classes=model.num_classes)
    return model, dataset
