#!/usr/bin/env bash
# Set up .venv if needed, then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check zerokv tests
.venv/bin/python -m pytest "$@"
