"""Saving a decoupled model and rebuilding it from its checkpoint alone.

A checkpoint (format ``filterscope.decoupled/1``) holds what the model *is*: the base model's
registered name, the classes, the input shape and normalisation, the decoupling settings that build
its gates, the gate threshold, and the weights. How it was trained (history, optimizer, epochs, the
decoupling schedule) belongs to the training loop's part of a run's checkpoint, which
:func:`load_decoupled` does not read. Checkpoints of earlier versions, whose settings use option
names that are gone, load through :func:`.legacy.upgrade_settings`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...core.errors import UserInputError
from .config import DecoupleConfig, model_settings
from .legacy import upgrade_settings
from .model import DecoupledModel

DECOUPLED_FORMAT = "filterscope.decoupled/1"
NORMALISATION = ("input_mean", "input_std")  # optional checkpoint entries: the per-channel mean and std of the inputs


def decoupled_metadata(model: DecoupledModel) -> dict:
    """What :func:`load_decoupled` needs besides the weights."""
    metadata = {
        "format": DECOUPLED_FORMAT,
        "base_model": model.model_name,
        "num_classes": model.num_classes,
        "input_shape": list(model.input_shape),
        "decouple_config": model_settings(model.config),
    }
    for name in NORMALISATION:  # how its inputs are normalised, when known
        if getattr(model, name) is not None:
            metadata[name] = [float(v) for v in getattr(model, name)]
    if model.gate_threshold:  # already in the gate biases; recorded to say where they came from
        metadata["gate_threshold"] = float(model.gate_threshold)
    return metadata


def save_decoupled(model: DecoupledModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write a checkpoint from which :func:`load_decoupled` rebuilds the model without other code."""
    from ...models.checkpoint import save_atomically

    payload = {**decoupled_metadata(model), "state_dict": model.state_dict(), **(extra or {})}
    return save_atomically(payload, path)


def load_decoupled(path: str | Path, base_model: nn.Module | None = None) -> DecoupledModel:
    """Rebuild a decoupled model from a checkpoint of :func:`save_decoupled` or of ``filterscope decouple``.

    Args:
        path: the checkpoint.
        base_model: the undecoupled architecture, needed only when it is not a built-in model.
    """
    from ...models import create_model
    from ...models.checkpoint import check_state_dict_fits, read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("format") != DECOUPLED_FORMAT:
        raise UserInputError(f"{str(path)!r} is not a decoupled-model checkpoint; create one with `filterscope decouple`.")
    if base_model is None:
        if not payload.get("base_model"):
            raise UserInputError(f"{str(path)!r} was decoupled from a custom model; pass that model as base_model.")
        base_model = create_model(payload["base_model"], payload["num_classes"])
    config = DecoupleConfig(**upgrade_settings(payload["decouple_config"], source=f"checkpoint {str(path)!r}"))
    model = DecoupledModel(base_model, config, num_classes=payload["num_classes"], input_shape=tuple(payload["input_shape"]),
                           model_name=payload.get("base_model"), input_mean=payload.get("input_mean"),
                           input_std=payload.get("input_std"), gate_threshold=float(payload.get("gate_threshold", 0.0)))
    check_state_dict_fits(model, payload["state_dict"], str(path))
    model.load_state_dict(payload["state_dict"], strict=False)
    return model.eval()
