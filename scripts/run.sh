#!/usr/bin/env bash
# Set up .venv if needed, then run the main job: a short CartPole training with its evaluation
# return and cache statistics. Extra arguments go to `zerokv train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A new run directory each time: zerokv never mixes two runs in one --out (an --out given here wins).
.venv/bin/zerokv train --env CartPole-v1 --out "runs/cartpole-$(date +%Y%m%d-%H%M%S)" "$@"
