#!/usr/bin/env bash
# One entry point for a fresh clone:  ./run.sh demo [args]  |  ./run.sh test [pytest args]
# Sets up a virtual environment (.venv) unless one is active, installs a CPU torch only when the
# environment has none (a torch you already have is left alone), then installs scalevid itself.
set -euo pipefail
cd "$(dirname "$0")"

setup() {
    if [ -z "${VIRTUAL_ENV:-}" ]; then
        [ -x .venv/bin/python ] || python3 -m venv .venv
        # shellcheck disable=SC1091
        . .venv/bin/activate
    fi
    python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
    python -m pip install -q -e ".[dev]"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    demo)
        setup
        exec scalevid demo "$@"
        ;;
    test)
        setup
        ruff check src tests benchmarks
        ruff format --check src tests benchmarks
        exec python -m pytest -q "$@"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: ./run.sh demo [--quick] [--out DIR] | ./run.sh test [pytest args] | ./run.sh setup" >&2
        exit 2
        ;;
esac
