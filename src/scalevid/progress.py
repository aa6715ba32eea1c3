"""Progress bars that appear only on a terminal.

A job whose output goes to a log file gets no bar: tqdm would write a redraw per update there
(thousands of lines). Where a bar is off, the stage's own log lines say how far it got.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether standard error, where the bars draw, is an interactive terminal."""
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, shown only when `enabled` and standard error is a terminal."""
    return tqdm(iterable, disable=not (enabled and on_terminal()), **kwargs)
