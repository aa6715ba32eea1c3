"""Where the evaluation's jobs run: each job is one probe row on one seed's split, trained in
this process or in forked CPU worker processes.

On a CPU most probes are small models, and two threads speed their steps up far less than
twice (two one-seed `scalevid eval --probes transformer` runs on the 2-core machine of
docs/performance.md: 87.6 s one after the other on two threads, 68.2 s side by side on one
thread each), while the jobs are independent: each seeds its own generators from its seed and
config, reads the shared context and writes nothing. So `workers` processes of `threads` torch
threads each train the jobs, costliest family first (set, attentive, head, kNN) so that no long
job starts last, and the caller gets each result as it finishes.

The workers are forked once the context is built, so they share its arrays copy-on-write
(`Representations.preload` reads the lazily kept vectors first), and each dies with the process
that forked it. Fork is safe for this only on Linux; elsewhere, and on an accelerator, every
job runs in this process, in the order given.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context

import torch

from scalevid.eval.cache import ProbeRun
from scalevid.eval.families import Context, run_row
from scalevid.eval.rows import ROWS, ProbeName
from scalevid.eval.splits import Split
from scalevid.hardware import flush_denormals

logger = logging.getLogger(__name__)

# Jobs start in this order of their row's family, the costliest first.
_FAMILY_ORDER = {"set": 0, "attentive": 1, "head": 2, "knn": 3}


@dataclass(frozen=True)
class Job:
    """One probe row on one seed."""

    name: ProbeName
    seed: int


@dataclass(frozen=True)
class Plan:
    """How many processes train the jobs, and the torch threads of each (1 process: this one,
    with its own thread count)."""

    workers: int
    threads: int


def plan_workers(requested: int, *, device: torch.device, jobs: int) -> Plan:
    """The processes for `jobs` jobs: `requested` (0 = auto: one per torch thread of this
    process, each with one thread) capped at the job count, sharing this process's threads;
    one (this process) on an accelerator, off Linux, or for a single job."""
    if requested < 0:
        raise ValueError(f"workers must be >= 0 (0 = auto), got {requested}")
    cores = torch.get_num_threads()
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return Plan(workers=1, threads=cores)
    workers = min(requested or cores, max(jobs, 1))
    if workers <= 1:
        return Plan(workers=1, threads=cores)
    return Plan(workers=workers, threads=max(1, cores // workers))


def job_order(jobs: list[Job]) -> list[Job]:
    """`jobs` with the costliest families first (stable within a family)."""
    return sorted(jobs, key=lambda job: _FAMILY_ORDER[ROWS[job.name].family])


def run_jobs(
    jobs: list[Job], ctx: Context, splits: dict[int, Split], *, plan: Plan
) -> Iterator[tuple[Job, ProbeRun]]:
    """Train every job and yield (job, its run) as each finishes: in this process in the given
    order for a one-process plan, else on `plan.workers` forked processes, costliest first. A
    failed job raises its error here; a worker that dies (killed, out of memory) raises a
    RuntimeError naming the setting that runs the jobs in this process instead."""
    if plan.workers <= 1:
        for job in jobs:
            yield job, _timed(job, ctx, splits)
        return
    # Set before the fork: the workers inherit it. No progress bars from the workers (they
    # would interleave); the caller logs a line per finished job.
    global _SHARED
    _SHARED = (replace(ctx, config=replace(ctx.config, progress=False)), splits)
    pool = ProcessPoolExecutor(
        plan.workers,
        mp_context=get_context("fork"),
        initializer=_start_worker,
        initargs=(plan.threads,),
    )
    pending: dict[Future, Job] = {}
    try:
        for job in job_order(jobs):
            pending[pool.submit(_run_job, job)] = job
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    run = future.result()
                except BrokenProcessPool as error:
                    raise RuntimeError(
                        f"an evaluation worker process died while training {job.name} seed "
                        f"{job.seed} ({error}); rerun with --set workers=1 to train every probe "
                        "in the main process (it uses less memory)"
                    ) from None
                yield job, run
    finally:
        _SHARED = None
        if pending:  # an error or an interrupt: stop the jobs still running
            for process in list((pool._processes or {}).values()):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)


# (context, splits) of the running `run_jobs`, which forked workers inherit.
_SHARED: tuple[Context, dict[int, Split]] | None = None


def _start_worker(threads: int) -> None:
    """In a forked worker: die with the parent (Linux prctl PR_SET_PDEATHSIG), so an
    evaluation that is killed stops its jobs too; let the parent alone handle Ctrl-C; use
    `threads` torch threads; flush subnormal floats to zero (`hardware.flush_denormals`)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    flush_denormals()


def _run_job(job: Job) -> ProbeRun:
    """A job in a worker, from the inherited context."""
    if _SHARED is None:
        raise RuntimeError("a worker job ran outside run_jobs")
    return _timed(job, *_SHARED)


def _timed(job: Job, ctx: Context, splits: dict[int, Split]) -> ProbeRun:
    """The job's run, with its wall time in `seconds`."""
    start = time.perf_counter()
    run = run_row(job.name, ctx, splits[job.seed], job.seed)
    run.seconds = time.perf_counter() - start
    return run
