"""benchmarks/ holds scripts, not a package: its folder goes on sys.path, as it does when one of
them runs, so the tests import them by name (`import machine`)."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
