"""Multi-process runs under ``torchrun``: process-group set-up, evaluation shards and reductions.

Training uses :class:`torch.nn.parallel.DistributedDataParallel`; statistics passes reduce their
sums with :func:`all_reduce_sum`; evaluation runs on the strided shards of
:func:`shard_for_evaluation`, whose per-sample results :func:`gather_evaluation_shards` puts back
together in the data set's order. Outside ``torchrun`` every function here is a no-op, so the same
code runs in one process.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Subset

from .errors import UserInputError


def launched_by_torchrun() -> bool:
    """True when the environment variables of ``torchrun`` are present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` set up (NCCL on GPUs, gloo on CPU).

    Returns:
        True when running distributed with more than one process.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op in one process) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard_for_evaluation(dataset):
    """This process's share of an evaluation set: every world_size-th sample, no padding."""
    if world_size() == 1:
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))


def gather_evaluation_shards(rows: np.ndarray) -> np.ndarray:
    """Per-sample results of every process's :func:`shard_for_evaluation` shard, on every process,
    in the order of the whole data set (process r computed rows r, r + W, r + 2W, ...).

    One process: ``rows`` itself.
    """
    if not is_distributed():
        return rows
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, rows)  # shards differ in length by one at most; objects need no padding
    whole = np.empty((sum(len(part) for part in parts), *rows.shape[1:]), dtype=rows.dtype)
    for process, part in enumerate(parts):
        whole[process::len(parts)] = part
    return whole


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str) -> torch.device:
    """Turn ``--device`` into a torch device, with one clear error when it is not available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was given but no CUDA GPU is available here; use --device cpu.")
    if device.type == "cuda" and launched_by_torchrun():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device
