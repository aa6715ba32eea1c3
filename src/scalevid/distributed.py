"""Processes under torchrun: one process group per job, set up from the environment and torn
down cleanly, and `Gather`, how a process sees the global batch. Without torchrun (WORLD_SIZE
unset or 1) nothing happens: one process on the CPU or one GPU never needs it."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from scalevid.config import ConfigError

# Seconds a rank waits for the others in one collective before the job stops: long enough for
# a slow step or a checkpoint save, short enough that a frozen rank does not hold the job for
# the backends' defaults (30 minutes for gloo, 10 for NCCL).
DEFAULT_TIMEOUT_S = 300.0


class DistributedTimeoutError(TimeoutError):
    """A rank waited longer than the job's timeout for the others (one is stuck or dead)."""


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: its rank among `world` processes and its device."""

    rank: int
    world: int
    device: torch.device  # this process's device (cuda:LOCAL_RANK under torchrun on GPUs)


@contextlib.contextmanager
def process_group(
    device: torch.device, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[Processes]:
    """gloo on CPU, NCCL on GPU, when launched by torchrun. A group created here is destroyed on
    the way out, after a barrier so that no rank tears it down while a peer still uses it; a
    group the caller already made is left alone. A collective that waits more than
    `timeout_s` for another rank raises DistributedTimeoutError on the waiting ranks, and the
    launcher then stops the rest."""
    if not timeout_s > 0:
        raise ConfigError(f"dist_timeout (--dist-timeout) must be positive, got {timeout_s}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Processes(rank=0, world=1, device=device)
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    rank = int(os.environ.get("RANK", "0"))
    if owned:
        with _timeouts(rank, world, timeout_s):
            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                timeout=datetime.timedelta(seconds=timeout_s),
            )
    ok = False
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        with _timeouts(rank, world, timeout_s):
            yield Processes(rank=rank, world=world, device=device)
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
        return _AllGather.apply(x, self.rank, self.world)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of x over ranks."""
        if self.world == 1:
            return x
        return _AllReduce.apply(x)


class _AllGather(torch.autograd.Function):
    """Concatenation over ranks; the gradient of a rank's part is the sum over ranks of the
    gradient at that part. Plain `all_gather`/`all_reduce` calls, which every backend has (the
    deprecated `torch.distributed.nn.functional` gathers' backward uses all-to-all on gloo,
    and with it a rank sometimes aborted at exit)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:  # noqa: D102
        import torch.distributed as dist

        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.size = rank, x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: D102
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.narrow(0, ctx.rank * ctx.size, ctx.size), None, None


class _AllReduce(torch.autograd.Function):
    """The sum over ranks; its gradient is the sum over ranks of the output's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        import torch.distributed as dist

        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


@contextlib.contextmanager
def _timeouts(rank: int, world: int, timeout_s: float) -> Iterator[None]:
    """A backend's timeout (a RuntimeError saying "timed out") as DistributedTimeoutError."""
    try:
        yield
    except RuntimeError as e:
        if "timed out" not in str(e).lower() and "timeout" not in str(e).lower():
            raise
        raise DistributedTimeoutError(
            f"rank {rank} of {world} waited more than {timeout_s:g} s (dist_timeout, "
            "--dist-timeout) for another rank, which is stuck or dead; every rank stops. Find "
            "the frozen process, or raise the timeout if a step is just slow"
        ) from None
