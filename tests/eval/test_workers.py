"""Tests for scalevid.eval.workers: the plan of processes, the job order, and forked workers'
results, errors and clean-up (the jobs here are stand-ins; test_protocol.py checks that forked
workers give an evaluation's exact results)."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import numpy as np
import pytest
import torch

from scalevid.eval import workers
from scalevid.eval.cache import ProbeRun
from scalevid.eval.config import EvalConfig
from scalevid.eval.families import Context
from scalevid.eval.workers import Job, Plan, job_order, plan_workers, run_jobs
from tests.conftest import subnormal_product

CPU = torch.device("cpu")
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="forked workers: Linux only"
)


@pytest.fixture
def threads():
    """Set torch's thread count for one test."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_auto_plans_one_single_thread_worker_per_torch_thread(threads, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    threads(2)
    assert plan_workers(0, device=CPU, jobs=27) == Plan(workers=2, threads=1)
    assert plan_workers(0, device=CPU, jobs=1) == Plan(workers=1, threads=2)  # one job: here
    assert plan_workers(1, device=CPU, jobs=27) == Plan(workers=1, threads=2)
    assert plan_workers(3, device=CPU, jobs=27) == Plan(workers=3, threads=1)  # oversubscribed
    threads(8)
    assert plan_workers(0, device=CPU, jobs=3) == Plan(workers=3, threads=2)  # capped at the jobs
    assert plan_workers(2, device=CPU, jobs=27) == Plan(workers=2, threads=4)
    threads(1)
    assert plan_workers(0, device=CPU, jobs=27) == Plan(workers=1, threads=1)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        plan_workers(-1, device=CPU, jobs=3)


def test_accelerators_and_other_systems_train_in_this_process(threads, monkeypatch):
    threads(4)
    monkeypatch.setattr(sys, "platform", "linux")
    assert plan_workers(4, device=torch.device("cuda"), jobs=9) == Plan(workers=1, threads=4)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert plan_workers(4, device=CPU, jobs=9) == Plan(workers=1, threads=4)


def test_the_config_rejects_a_negative_worker_count():
    with pytest.raises(ValueError, match="workers must be >= 0"):
        EvalConfig(workers=-2)


def test_jobs_start_costliest_family_first_in_a_stable_order():
    jobs = [
        Job(name, seed) for seed in (0, 1) for name in ("knn", "linear", "scale_ft", "attentive")
    ]
    ordered = job_order(jobs)
    assert [j.name for j in ordered] == ["scale_ft"] * 2 + ["attentive"] * 2 + ["linear"] * 2 + [
        "knn"
    ] * 2
    assert [j.seed for j in ordered] == [0, 1] * 4


# --------------------------------------------------------------------------- forked jobs


def _context() -> Context:
    return Context(
        config=EvalConfig(progress=True),
        task="classification",
        num_classes=2,
        train_labels=np.zeros(4, dtype=np.int64),
        train=None,  # type: ignore[arg-type]  # the stand-in jobs read nothing
        test=None,  # type: ignore[arg-type]
        model=None,
        device=CPU,
    )


def _stand_in(behaviour: dict[str, str]):
    """A run_row stand-in: each row's job returns a run recording where it ran, unless its
    `behaviour` says to fail, die or sleep."""

    def run_row(name, ctx, split, seed):
        what = behaviour.get(name, "")
        if what == "fail":
            raise ValueError(f"{name} cannot train")
        if what == "die":
            os._exit(3)
        if what == "sleep":
            time.sleep(60)
        chosen = {
            "pid": os.getpid(),
            "progress": ctx.config.progress,
            "threads": torch.get_num_threads(),
            "subnormal": subnormal_product(),
        }
        return ProbeRun(chosen=chosen, grid=[], num_train=seed, test_scores=np.full((2, 2), seed))

    return run_row


JOBS = [Job(name, seed) for seed in (0, 1) for name in ("knn", "linear", "transformer")]


@linux_only
def test_forked_workers_run_every_job_once_with_their_threads(monkeypatch):
    monkeypatch.setattr(workers, "run_row", _stand_in({}))
    splits = {0: None, 1: None}
    done = list(run_jobs(JOBS, _context(), splits, plan=Plan(workers=2, threads=1)))  # type: ignore[arg-type]
    assert len(done) == len(JOBS)
    assert sorted((j.name, j.seed) for j, _ in done) == sorted((j.name, j.seed) for j in JOBS)
    for job, run in done:
        assert run.num_train == job.seed and run.seconds is not None and run.seconds >= 0
        assert run.chosen["pid"] != os.getpid()  # trained in a worker
        assert run.chosen["progress"] is False  # no progress bars from workers
        assert run.chosen["threads"] == 1
        if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # x86 SIMD: FTZ/DAZ exist
            assert run.chosen["subnormal"] == 0.0  # flushed (hardware.flush_denormals)
    assert len({run.chosen["pid"] for _, run in done}) <= 2
    assert multiprocessing.active_children() == []
    here = list(run_jobs(JOBS, _context(), splits, plan=Plan(workers=1, threads=1)))  # type: ignore[arg-type]
    assert [j for j, _ in here] == JOBS  # in this process, in the given order
    assert all(run.chosen["pid"] == os.getpid() for _, run in here)


@linux_only
def test_a_failing_job_raises_its_error_and_stops_the_workers(monkeypatch):
    monkeypatch.setattr(workers, "run_row", _stand_in({"linear": "fail", "knn": "sleep"}))
    splits = {0: None, 1: None}
    with pytest.raises(ValueError, match="linear cannot train"):
        list(run_jobs(JOBS, _context(), splits, plan=Plan(workers=2, threads=1)))  # type: ignore[arg-type]
    assert multiprocessing.active_children() == []  # the sleeping jobs were stopped


@linux_only
def test_a_dead_worker_is_named_with_the_setting_that_avoids_workers(monkeypatch):
    monkeypatch.setattr(workers, "run_row", _stand_in({"transformer": "die"}))
    splits = {0: None, 1: None}
    with pytest.raises(RuntimeError, match=r"worker process died .*--set workers=1"):
        list(run_jobs(JOBS, _context(), splits, plan=Plan(workers=2, threads=1)))  # type: ignore[arg-type]
    assert multiprocessing.active_children() == []


@linux_only
def test_leaving_early_stops_the_jobs_still_running(monkeypatch):
    monkeypatch.setattr(workers, "run_row", _stand_in({"knn": "sleep", "linear": "sleep"}))
    splits = {0: None, 1: None}
    start = time.perf_counter()
    for job, _ in run_jobs(JOBS, _context(), splits, plan=Plan(workers=2, threads=1)):  # type: ignore[arg-type]
        assert job.name == "transformer"
        break  # like an interrupt: the generator closes
    assert time.perf_counter() - start < 30  # the sleeping jobs were killed, not awaited
    assert multiprocessing.active_children() == []
