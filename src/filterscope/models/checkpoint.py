"""Reading and writing model checkpoints safely.

Checkpoints are pickles, so they are always read with ``weights_only=True``; they are written
atomically (temporary file in the same folder, then ``os.replace``) so a run killed while
saving never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.atomic import atomic_file
from ..core.errors import UserInputError

# BatchNorm's step counter is absent from many published checkpoints and only matters when
# momentum is None, so a checkpoint may lack it.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def read_checkpoint(path: str | os.PathLike, flag: str = "--weights") -> dict[str, Any]:
    """Load a checkpoint file onto the CPU with ``weights_only=True`` (``flag``: the option that named it, for the error).

    Raises:
        UserInputError: the file is missing or cannot be read as a PyTorch checkpoint.
    """
    path = check_checkpoint_exists(path, flag)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise UserInputError(
            f"cannot read checkpoint {str(path)!r} ({type(error).__name__}); it is corrupt or not "
            "a PyTorch checkpoint: re-download or re-create it."
        ) from None
    if not isinstance(payload, dict):
        raise UserInputError(
            f"checkpoint {str(path)!r} holds a {type(payload).__name__}, not a state dict; save "
            "model.state_dict() instead of the model object."
        )
    return payload


def check_checkpoint_exists(path: str | os.PathLike, flag: str = "--weights") -> Path:
    """The path, or one clear error naming ``flag`` when no file is there (a cheap check, before anything is loaded)."""
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoints" / "last.pt"
        hint = f"pass {str(inside)!r}, the run's checkpoint" if inside.is_file() else "pass a checkpoint file"
        raise UserInputError(f"checkpoint {str(path)!r} is a directory, not a file; {hint} as {flag}.")
    if not path.is_file():
        raise UserInputError(f"checkpoint {str(path)!r} does not exist; check the {flag} path.")
    return path


def extract_state_dict(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint, with any ``module.`` prefix removed."""
    for key in ("state_dict", "model", "model_state"):
        if key in payload and isinstance(payload[key], dict):
            payload = payload[key]
            break
    state = {}
    for name, value in payload.items():
        if not isinstance(value, torch.Tensor):
            continue
        state[name[len("module."):] if name.startswith("module.") else name] = value
    return state


def check_state_dict_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one clear error when ``state`` does not fit ``model`` (keys or shapes)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return

    def listed(names: list[str]) -> str:
        shown = ", ".join(names[:3])
        return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    problems = []
    if missing:
        problems.append(f"missing keys {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {listed(mismatched)}")
    raise UserInputError(
        f"checkpoint {source!r} does not fit this model ({'; '.join(problems)}); pass the "
        "--model (and --num-classes) it was trained with."
    )


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint into ``model`` in place after checking that it fits.

    Returns:
        The same model, for chaining.
    """
    state = extract_state_dict(read_checkpoint(path))
    check_state_dict_fits(model, state, str(path))
    model.load_state_dict(state, strict=False)
    return model


def save_atomically(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` with ``torch.save`` to a temporary file, then rename it onto ``path``."""
    with atomic_file(path, durable=True) as stream:
        torch.save(payload, stream)
    return Path(path)
