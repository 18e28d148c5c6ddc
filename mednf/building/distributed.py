"""Process-group helpers for ``torchrun`` builds (torch.distributed; gloo on CPU, NCCL on CUDA).

A plain ``mednf build`` is world size 1 and never touches torch.distributed. Under ``torchrun`` (the
``WORLD_SIZE``/``RANK`` variables are set) :func:`setup` joins the group; meta-training all-reduces
gradients (:meth:`Dist.sum_`), fitting shards row blocks by rank, rank 0 writes the shared files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
from torch import Tensor

from mednf.engine.device import resolve_device

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place in the process group (rank 0 of 1 without ``torchrun``) and its collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 (immutable)  where collective tensors live (cuda for NCCL)

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes the shared files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one rank (collectives do something)."""
        return self.world > 1

    def barrier(self) -> None:
        """Wait for every rank (nothing at world size 1)."""
        if self.enabled:
            torch.distributed.barrier()

    def sum_(self, tensors: list[Tensor]) -> None:
        """In-place sum over ranks, coalesced into one flat buffer (one all-reduce per call)."""
        if not self.enabled:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        torch.distributed.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def agree(self, ok: bool) -> bool:
        """True only if every rank says True (used to stop all ranks together on an error)."""
        if not self.enabled:
            return ok
        flag = torch.tensor([0.0 if ok else 1.0], device=self.device)
        torch.distributed.all_reduce(flag)
        return float(flag) == 0.0

    def close(self) -> None:
        """Leave the process group, if one was joined."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def on_every_rank(dist: Dist, attempt: Callable[[], T], catch: type[Exception], fail: Callable[[str], Exception],
                  elsewhere: str, *, main_first: bool = False) -> T:
    """``attempt()`` on every rank (with ``main_first``: rank 0 first, then the others); when it raises ``catch``
    on any rank, every rank raises: the rank where it happened its own error (its class kept, so the command
    line's exit status still tells a wrong setting from a failure), the others ``fail(elsewhere)``."""
    result, caught = None, None
    for turn in ("main", "others") if main_first else ("all",):
        if turn == "all" or (turn == "main") == dist.is_main:
            try:
                result = attempt()
            except catch as err:
                caught = err
        if not dist.agree(caught is None):
            if caught is not None:
                raise caught
            raise fail(elsewhere)
    return result  # type: ignore[return-value]  # set on every rank that got here


def setup(device: torch.device) -> Dist:
    """Join the torchrun process group if there is one (backend from the device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return Dist(rank=torch.distributed.get_rank(), world=torch.distributed.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")), device=device)


def env_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's variables, before the process group exists."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(gpu: int | None) -> torch.device:
    """This rank's device: ``--gpu N`` (checked), or under torchrun on GPUs the rank's own (``LOCAL_RANK``)."""
    device = resolve_device(gpu)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
        torch.cuda.set_device(device)
    return device
