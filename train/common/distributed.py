"""Data-parallel training with ``torchrun``: the process group and the few collectives a trainer needs.

A script started by ``torchrun`` finds ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment; :func:`init_from_env` joins that group (gloo on CPU, NCCL on
CUDA). Started without ``torchrun`` it returns a single-process :class:`Context` and every helper
here is a no-op, so one code path serves both.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process sits in the run: ``rank`` of ``world_size``; ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def lead(self) -> bool:
        """Rank 0 writes TensorBoard, checkpoints and metrics."""
        return self.rank == 0


def init_from_env(device: str) -> tuple[Context, str]:
    """Join the process group described by torchrun's environment variables.

    Returns the context and the device this rank should use (``cuda`` becomes ``cuda:LOCAL_RANK``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.device(device).type == "cuda"
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), local_rank), device


def shutdown(context: Context) -> None:
    """Leave the process group (a no-op for a single process)."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def average_(tensors: list[torch.Tensor], context: Context) -> None:
    """Replace each tensor by its mean over the ranks, with one all-reduce of a flat buffer."""
    if not context.distributed or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= context.world_size
    for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(part.view_as(tensor))


def mean_across(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """The mean of ``tensor`` over the ranks (a new tensor; ``tensor`` itself when single-process)."""
    if not context.distributed:
        return tensor
    total = tensor.detach().clone()
    average_([total], context)
    return total


def gather_across(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape on each), concatenated along the first dimension in rank order."""
    if not context.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast_(tensors: list[torch.Tensor], context: Context) -> None:
    """Overwrite the tensors with rank 0's values (every rank starts from the same parameters)."""
    if context.distributed:
        for tensor in tensors:
            dist.broadcast(tensor.data, 0)


def merge_across(states: dict, context: Context) -> dict:
    """The union of every rank's dict of picklable values (rank 0's value wins on shared keys)."""
    if not context.distributed:
        return states
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, states)
    merged = {}
    for part in reversed(gathered):
        merged.update(part)
    return merged


def report_failure(context: Context, error: BaseException, checkpoint: str) -> None:
    """Say on stderr which rank failed and that the run stops (torchrun then ends every rank)."""
    if context.distributed:
        print(
            f"\n[rank {context.rank}/{context.world_size}] training failed: {error!r}. "
            f"Stopping the whole run; the last checkpoint ({checkpoint}) is complete (written atomically).",
            file=sys.stderr,
            flush=True,
        )


SHARD_SEED_STRIDE = 10_000


def shard_generators(seed: int, shards: range, device) -> dict[str, torch.Generator]:
    """Data and sampling generators of each shard of a batch (shard ``s`` seeded
    ``seed + SHARD_SEED_STRIDE * s``); shard 0's are the single-process run's ones."""
    generators = {}
    for shard in shards:
        data, sample = shard_names(shard)
        generators[data] = torch.Generator().manual_seed(seed + SHARD_SEED_STRIDE * shard)
        generators[sample] = torch.Generator(device).manual_seed(seed + SHARD_SEED_STRIDE * shard + 1)
    return generators


def shard_names(shard: int) -> tuple[str, str]:
    """The names of shard ``shard``'s data and sampling generators."""
    return ("data", "sample") if shard == 0 else (f"data{shard}", f"sample{shard}")
