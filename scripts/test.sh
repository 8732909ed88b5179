#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check zerokv tests
# Keep Python's bytecode cache even where the environment turns it off: without it every run compiles
# zerokv and re-rewrites the test modules' asserts again (about 3 s of the fast subset's start).
PYTHONDONTWRITEBYTECODE= .venv/bin/python -m pytest "$@"
