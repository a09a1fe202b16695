"""Per-channel statistics of an activation map: the one number per sample and channel that captures keep."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .errors import UserInputError

__all__ = ["STATISTICS", "channel_statistics", "check_statistics"]

#: Per-channel statistics of an activation map, over its spatial positions.
STATISTICS = ("mean", "sum", "max", "frac_positive")


def channel_statistics(activation: torch.Tensor, stat: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reduce an activation map to one number per sample and channel.

    Args:
        activation: ``(batch, channels, height, width)`` (or any ``(batch, channels, ...)``).
        stat: One of :data:`STATISTICS`: ``"mean"``, ``"sum"`` or ``"max"`` over the spatial
            positions, or ``"frac_positive"``, the fraction of positions whose value is > 0.
        dtype: Floating dtype of the result (and of the accumulation for mean and sum).

    Returns:
        A ``(batch, channels)`` tensor on the activation's device.
    """
    flat = activation.detach().flatten(2)
    if stat == "mean":
        return flat.mean(dim=2, dtype=dtype)
    if stat == "sum":
        return flat.sum(dim=2, dtype=dtype)
    if stat == "max":
        return flat.amax(dim=2).to(dtype)
    if stat == "frac_positive":
        return (flat > 0).sum(dim=2, dtype=dtype) / flat.shape[2]
    raise UserInputError(f"unknown statistic {stat!r}; pass one of {', '.join(STATISTICS)}.")


def check_statistics(stats: Iterable[str] | str) -> tuple[str, ...]:
    """``stats`` as a non-empty tuple of names from :data:`STATISTICS` (one name may be passed alone).

    Raises:
        UserInputError: ``stats`` is empty or names an unknown statistic.
    """
    stats = (stats,) if isinstance(stats, str) else tuple(stats)
    unknown = [stat for stat in stats if stat not in STATISTICS]
    if unknown or not stats:
        raise UserInputError(f"unknown statistics {unknown or stats!r}; pass a tuple of {', '.join(STATISTICS)}.")
    return stats
