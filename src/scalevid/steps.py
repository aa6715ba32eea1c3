"""The one orchestrator: a recipe is a list of steps, each made once and reused while its
settings hold. `scalevid recipe` (paper tables) and `scalevid demo` (the demo's recipe) both
run their steps here, under one caching rule:

- every step's output has a record, `<out>/steps/<step key>.json`: the settings that decide
  the output (written before the step starts), then its outcome and seconds (when it ends);
- a finished step whose settings and inputs match is reused ("cached" on its progress line);
- an interrupted step (a record that is not complete) runs again with the same settings, and
  the stage resumes where it stopped (extraction video by video, pretraining from its last
  checkpoint, video generation file by file);
- a step whose settings differ, or whose inputs were remade since, is either an error (the step
  says how to fix it; a feature store shared by several recipes) or made afresh (`recompute`:
  its output is deleted first), and one log line says which and why;
- a step with `cached=False` (rendering a report or a table: seconds) runs every time.

Each step prints one line with its elapsed time, `[3/7] pretrain SCALE ... 212 s`; with
`live` it is drawn while the step runs (on a terminal; log lines print above it).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from scalevid.config import ConfigError, result_settings
from scalevid.folders import STEPS
from scalevid.outfiles import write_text

logger = logging.getLogger(__name__)


class StepError(ConfigError):
    """A step whose recorded output was made with other settings and may not be remade."""


def settings_of(config: Any) -> dict[str, Any]:
    """What of a stage's config decides its output, JSON-normalised for comparison."""
    return json.loads(json.dumps(result_settings(config)))


@dataclass
class Step:
    """One stage of a recipe.

    Attributes:
        key: the output's path relative to the recipe's output folder ("stores/ucf101/train",
            "run"); it names the step's record, `steps/<key>.json`.
        title: the progress line's text, e.g. "pretrain SCALE".
        settings: what decides the output (JSON values; `settings_of(config)` for a config).
        make: makes (or completes) the output; returns the outcome to record (JSON values).
        inputs: keys of the steps whose output this one reads; remaking one remakes this.
        on_change: what a record with other settings or remade inputs leads to.
        hint: for an error, how to get past it (default: another --out, or delete the output
            and its record).
        fresh: what `recompute` deletes before making the step again (its output).
        cached: False for a step that runs every time (seconds: a report, a table).
        upgrade: brings a recorded settings mapping to today's names (retired settings).
    """

    key: str
    title: str
    settings: dict[str, Any]
    make: Callable[[], dict[str, Any] | None]
    inputs: Sequence[str] = ()
    on_change: Literal["error", "recompute"] = "error"
    hint: str = ""
    fresh: Sequence[Path] = ()
    cached: bool = True
    upgrade: Callable[[dict[str, Any]], None] | None = None


@dataclass
class Done:
    """What `run_steps` knows of a finished step: its outcome, the seconds it took when made,
    and whether this run reused it."""

    outcome: dict[str, Any]
    seconds: float
    reused: bool
    made: str = ""


@dataclass
class _Record:
    """A step's record file."""

    path: Path
    data: dict[str, Any] | None = None

    @classmethod
    def read(cls, out: Path, key: str) -> _Record:
        path = record_path(out, key)
        data = json.loads(path.read_text()) if path.is_file() else None
        return cls(path, data)

    def write(self, data: dict[str, Any]) -> None:
        self.data = data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(data, indent=2) + "\n")


def record_path(out: str | Path, key: str) -> Path:
    """Where the step `key` of a recipe writing into `out` keeps its record."""
    return Path(out) / STEPS / f"{key}.json"


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for k, v in data.items():
        flat.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two settings mappings."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def changed_settings(step: Step, record: dict[str, Any] | None) -> list[str]:
    """The settings of `step` that differ from its record's (none without a record)."""
    if record is None:
        return []
    recorded = json.loads(json.dumps(record.get("settings") or {}))
    if step.upgrade is not None:
        step.upgrade(recorded)
    return differences(recorded, json.loads(json.dumps(step.settings)))


def _refusal(step: Step, out: Path, why: str) -> StepError:
    output, record = out / step.key, record_path(out, step.key)
    hint = step.hint or f"use another --out, or delete {output} and {record} to make it again"
    return StepError(f"{output} was made with {why}; {hint}")


def check_steps(steps: Sequence[Step], out: str | Path) -> None:
    """Refuse, before anything runs, a step recorded with other settings that may not be
    remade: an edited recipe fails now, not after hours of extraction."""
    for step in steps:
        record = _Record.read(Path(out), step.key)
        changed = changed_settings(step, record.data)
        if changed and step.cached and step.on_change == "error":
            raise _refusal(step, Path(out), f"other settings ({', '.join(changed)} differ)")


def say(text: str) -> None:
    """Print `text` for the user from inside a step, above its progress line."""
    tqdm.write(text, file=sys.stdout)


class _Line:
    """One step's progress line: drawn and ticking while the step runs when `live` (on a
    terminal, log lines printed above it), else printed once when the step ends."""

    def __init__(self, text: str, live: bool) -> None:
        self.text = text
        self.live = live and sys.stdout.isatty()
        self.start = time.perf_counter()

    def __enter__(self) -> _Line:
        if not self.live:
            logger.info("%s ...", self.text)
            return self
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        self._bar = tqdm(
            total=None, file=sys.stdout, desc=self.text, bar_format="{desc} ... {elapsed_s:.0f} s"
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._bar.refresh()

    def close(self, result: str) -> None:
        if self.live:
            self._stop.set()
            self._ticker.join()
            self._bar.bar_format = "{desc}"
            self._bar.set_description_str(f"{self.text} ... {result}")
            self._bar.close()
            self._redirect.__exit__(None, None, None)
        else:
            print(f"{self.text} ... {result}", flush=True)

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is not None:
            self.close(f"stopped after {time.perf_counter() - self.start:.0f} s")


def _stale(step: Step, record: dict[str, Any] | None, done: dict[str, Done]) -> str | None:
    """Why a recorded step cannot be reused as it is (None: it can, or there is no record)."""
    if record is None:
        return None
    changed = changed_settings(step, record)
    if changed:
        return f"other settings ({', '.join(changed)} differ)"
    inputs = record.get("inputs") or {}
    remade = [k for k in step.inputs if k in done and inputs.get(k) != done[k].made]
    if remade:
        return f"inputs made since ({', '.join(remade)})"
    return None


def _run_one(step: Step, out: Path, done: dict[str, Done], line: _Line) -> Done:
    record = _Record.read(out, step.key)
    why = _stale(step, record.data, done) if step.cached else None
    if why is not None:
        if step.on_change == "error":
            raise _refusal(step, out, why)
        logger.warning("%s: made with %s: making it afresh", step.key, why)
        for path in step.fresh:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        record.data = None
    if step.cached and record.data is not None and record.data.get("complete"):
        seconds = float(record.data.get("seconds", 0.0))
        line.close(f"cached ({seconds:.0f} s when made)")
        return Done(record.data.get("outcome") or {}, seconds, True, record.data.get("made", ""))
    if record.data is not None and step.cached:
        logger.info("%s: resuming an interrupted run", step.key)
    inputs = {k: done[k].made for k in step.inputs if k in done}
    base = {"step": step.title, "settings": step.settings, "inputs": inputs}
    if step.cached:
        record.write({**base, "complete": False})
    outcome = step.make() or {}
    seconds = time.perf_counter() - line.start
    made = uuid.uuid4().hex
    if step.cached:
        record.write(
            {**base, "complete": True, "made": made, "seconds": seconds, "outcome": outcome}
        )
    line.close(f"{seconds:.0f} s")
    return Done(outcome, seconds, False, made)


def plan_steps(steps: Sequence[Step], out: str | Path) -> dict[str, str]:
    """What `run_steps` would do with each step, by key, without running any: "cached",
    "resume", "make", "make afresh: <why>", "error: <why>" or "render" (an uncached step)."""
    out, todo, plan = Path(out), set(), {}
    for step in steps:
        record = _Record.read(out, step.key).data
        why = _stale(step, record, {}) if step.cached else None
        remade = [k for k in step.inputs if k in todo]
        if why is None and remade and record is not None:
            why = f"inputs made since ({', '.join(remade)})"
        if not step.cached:
            plan[step.key] = "render"
        elif why is not None:
            plan[step.key] = f"{'error' if step.on_change == 'error' else 'make afresh'}: {why}"
        elif record is None:
            plan[step.key] = "make"
        else:
            plan[step.key] = "cached" if record.get("complete") else "resume"
        if plan[step.key] not in ("cached", "render"):
            todo.add(step.key)
    return plan


def run_steps(steps: Sequence[Step], out: str | Path, *, live: bool = False) -> dict[str, Done]:
    """Run `steps` in order into `out` under the module's caching rule; returns each step's
    `Done` by key. The steps' settings are checked against their records first."""
    out = Path(out)
    check_steps(steps, out)
    done: dict[str, Done] = {}
    width = len(str(len(steps)))
    for i, step in enumerate(steps, 1):
        with _Line(f"[{i:>{width}}/{len(steps)}] {step.title}", live) as line:
            done[step.key] = _run_one(step, out, done, line)
    return done
