"""Calculation paths and filter states of a decoupled network over a data set.

The calculation path of an input is the concatenation of its hard gate vectors over all gated
layers (Li et al., 2020, Sec. 3.4). Over a data set, each gated filter is

- *energetic* when every input switches it on,
- *silent* when no input does,
- *dynamic* otherwise.

One streaming pass keeps per-filter activation counts, the bit-packed paths (N_total / 8 bytes per
input), labels, predictions and FLOPs per input — never activation maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...core.atomic import atomic_file
from ...core.distributed import all_reduce_sum, gather_evaluation_shards
from .model import DecoupledModel


@dataclass
class PathRecord:
    """What one pass of a decoupled model over a data set recorded.

    Attributes:
        layer_names: gated units in order; ``layer_widths`` their filter counts.
        activation_counts: per layer, how many inputs switched each filter on (int64, (N_l,)).
        num_samples: inputs seen.
        packed_paths: (num_samples, ceil(Σ N_l / 8)) uint8, ``np.packbits`` of the concatenated gates.
        labels, predictions: (num_samples,) int64.
        flops: (num_samples,) FLOPs of each input under its gates.
        dense_flops: FLOPs of the original network.
    """

    layer_names: list[str]
    layer_widths: list[int]
    activation_counts: list[np.ndarray]
    num_samples: int
    packed_paths: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    flops: np.ndarray
    dense_flops: int

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predictions).mean()) if self.num_samples else float("nan")

    def paths(self) -> np.ndarray:
        """The unpacked binary paths, (num_samples, Σ N_l) uint8."""
        return np.unpackbits(self.packed_paths, axis=1, count=sum(self.layer_widths))

    def filter_states(self) -> dict:
        """Share of energetic, silent and dynamic filters per layer and in total."""
        return filter_states(self.activation_counts, self.num_samples, self.layer_names)

    def summary(self) -> dict:
        states = self.filter_states()
        mean_flops = float(self.flops.mean())
        return {
            "accuracy": self.accuracy,
            "num_samples": self.num_samples,
            "mean_flops": mean_flops,
            "dense_flops": self.dense_flops,
            "flops_reduction": self.dense_flops / mean_flops,
            "active_fraction": float(sum(c.sum() for c in self.activation_counts) / (self.num_samples * sum(self.layer_widths))),
            "active_fraction_per_layer": {
                name: float(c.sum() / (self.num_samples * len(c))) for name, c in zip(self.layer_names, self.activation_counts)
            },
            **states["total"],
            "per_layer": states["per_layer"],
        }

    def save(self, path: str | Path) -> Path:
        """Write the record as one ``.npz`` (paths stay bit-packed)."""
        path = Path(path)
        with atomic_file(path) as stream:
            np.savez_compressed(
                stream, packed_paths=self.packed_paths, labels=self.labels, predictions=self.predictions, flops=self.flops,
                layer_widths=np.array(self.layer_widths), layer_names=np.array(self.layer_names),
                activation_counts=np.concatenate(self.activation_counts), dense_flops=np.array(self.dense_flops),
                num_samples=np.array(self.num_samples),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PathRecord":
        """Read a record written by :meth:`save` (``arrays/paths_<split>.npz`` of a run directory)."""
        with np.load(path) as arrays:
            widths = [int(w) for w in arrays["layer_widths"]]
            bounds = np.cumsum([0, *widths])
            counts = arrays["activation_counts"]
            return cls(
                layer_names=[str(n) for n in arrays["layer_names"]],
                layer_widths=widths,
                activation_counts=[counts[bounds[i]:bounds[i + 1]] for i in range(len(widths))],
                num_samples=int(arrays["num_samples"]) if "num_samples" in arrays else len(arrays["labels"]),
                packed_paths=arrays["packed_paths"],
                labels=arrays["labels"],
                predictions=arrays["predictions"],
                flops=arrays["flops"],
                dense_flops=int(arrays["dense_flops"]),
            )


def filter_states(activation_counts: list[np.ndarray], num_samples: int, layer_names: list[str]) -> dict:
    """Energetic (on for all inputs), silent (on for none) and dynamic filters, per layer and in total."""
    per_layer = {}
    totals = np.zeros(3, dtype=np.int64)
    for name, counts in zip(layer_names, activation_counts):
        energetic = int((counts == num_samples).sum())
        silent = int((counts == 0).sum())
        dynamic = len(counts) - energetic - silent
        totals += (energetic, silent, dynamic)
        per_layer[name] = {"filters": len(counts), "energetic": energetic, "silent": silent, "dynamic": dynamic}
    filters = int(totals.sum())
    return {
        "per_layer": per_layer,
        "total": {
            "filters": filters,
            "energetic_fraction": float(totals[0] / filters),
            "silent_fraction": float(totals[1] / filters),
            "dynamic_fraction": float(totals[2] / filters),
        },
    }


class PathCollector:
    """Records paths and filter states one batch at a time, from the gates ``model`` has just used.

    Call :meth:`observe` after each evaluation-mode forward pass of ``model`` (directly, or as
    ``evaluate(..., observe=collector.observe)`` to measure accuracy and paths in one pass), then
    :meth:`record`.

    Args:
        sharded: the batches come from this process's :func:`filterscope.core.distributed.shard_for_evaluation`
            shard under ``torchrun``: :meth:`record` then sums the activation counts over processes
            and puts every process's paths, labels, predictions and FLOPs together in the data set's
            order, so each process records the whole data set. False: the record is of the batches
            this process saw.
    """

    def __init__(self, model: DecoupledModel, *, keep_paths: bool = True, sharded: bool = False):
        self.model = model
        self.keep_paths = keep_paths
        self.sharded = sharded
        self.counts = [torch.zeros(n, dtype=torch.float64) for n in model.out_channels]
        self.packed: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.flops: list[np.ndarray] = []

    @torch.no_grad()
    def observe(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        gates = [z.cpu() for z in self.model.last_gates()]
        for total, z in zip(self.counts, gates):
            total += z.sum(0).double()
        if self.keep_paths:
            self.packed.append(np.packbits(torch.cat(gates, 1).numpy().astype(np.uint8), axis=1))
        self.labels.append(labels.cpu().numpy())
        self.predictions.append(logits.argmax(1).cpu().numpy())
        self.flops.append(self.model.cost_model.per_input(gates).numpy())

    def record(self) -> PathRecord:
        width_bytes = (sum(self.model.out_channels) + 7) // 8
        rows = {
            "packed_paths": np.concatenate(self.packed) if self.packed else np.zeros((0, width_bytes), np.uint8),
            "labels": np.concatenate(self.labels),
            "predictions": np.concatenate(self.predictions),
            "flops": np.concatenate(self.flops),
        }
        counts = [total.clone() for total in self.counts]
        if self.sharded:
            counts = [all_reduce_sum(total) for total in counts]
            rows = {key: gather_evaluation_shards(value) for key, value in rows.items()}
        return PathRecord(
            layer_names=list(self.model.gated_units),
            layer_widths=list(self.model.out_channels),
            activation_counts=[c.round().long().numpy() for c in counts],
            num_samples=len(rows["labels"]),
            dense_flops=self.model.cost_model.dense_flops,
            **rows,
        )


@torch.no_grad()
def collect_paths(model: DecoupledModel, loader, *, device="cpu", progress: bool = True, keep_paths: bool = True,
                  sharded: bool = False) -> PathRecord:
    """Run ``model`` with evaluation (hard, noise-free) gates over ``loader`` and record paths and states.

    The model's training flag is restored afterwards. ``sharded``: ``loader`` holds this process's
    :func:`filterscope.core.distributed.shard_for_evaluation` shard under ``torchrun``, and the record
    is put together over processes (see :class:`PathCollector`).
    """
    was_training = model.training
    model.eval()
    collector = PathCollector(model, keep_paths=keep_paths, sharded=sharded)
    try:
        for images, labels in tqdm(loader, desc="paths", disable=not progress, leave=False):
            collector.observe(labels, model(images.to(device)))
    finally:
        model.train(was_training)
    return collector.record()
