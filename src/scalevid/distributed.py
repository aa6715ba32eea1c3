"""Processes under torchrun: one process group per job, set up from the environment and torn
down cleanly, and `Gather`, how a process sees the global batch. Without torchrun (WORLD_SIZE
unset or 1) nothing happens: one process on the CPU or one GPU never needs it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: its rank among `world` processes and its device."""

    rank: int
    world: int
    device: torch.device  # this process's device (cuda:LOCAL_RANK under torchrun on GPUs)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Processes]:
    """gloo on CPU, NCCL on GPU, when launched by torchrun. A group created here is destroyed on
    the way out, after a barrier so that no rank tears it down while a peer still uses it; a
    group the caller already made is left alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Processes(rank=0, world=1, device=device)
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    ok = False
    try:
        yield Processes(rank=dist.get_rank(), world=dist.get_world_size(), device=device)
        ok = True
    finally:
        if owned:
            if ok:
                dist.barrier()
            dist.destroy_process_group()


@dataclass(frozen=True)
class Gather:
    """How this process sees the global batch in data-parallel training.

    `all_gather(x)` returns the concatenation over ranks (with gradients flowing back to each
    rank's part); `all_reduce(x)` sums over ranks. One process: identity.
    """

    rank: int = 0
    world: int = 1

    def rand(
        self, shape: tuple[int, ...], *, batch_dim: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Uniform noise for the local batch: the rank's slice of the global batch's noise, so
        that data-parallel runs draw exactly what one process would."""
        full = list(shape)
        full[batch_dim] *= self.world
        noise = torch.rand(full, generator=generator, device=generator.device)
        return noise.narrow(batch_dim, self.rank * shape[batch_dim], shape[batch_dim])

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, ...) of every rank, concatenated in rank order: (world * b, ...)."""
        if self.world == 1:
            return x
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x), dim=0)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of x over ranks."""
        if self.world == 1:
            return x
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)
