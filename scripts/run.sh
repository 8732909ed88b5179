#!/usr/bin/env bash
# Set up .venv if needed, then run the main job: a short CartPole training with its evaluation
# return and cache statistics. Extra arguments go to `zerokv train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/zerokv train --env CartPole-v1 "$@"
