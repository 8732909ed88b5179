#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv inside the repo and installs zerokv into it
# with every extra the tests use (test, atari, box2d, dmc, mujoco, video, track, docs, ray).
# torch is installed first and pinned to the CPU build zerokv is measured with: zerokv itself only
# asks for a torch range, which this satisfies, so pip pulls no other (multi-GB CUDA) build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.zerokv-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[test,atari,box2d,dmc,mujoco,video,track,docs,ray]"  # every extra: their tests run too
  echo "$want" > "$stamp"
fi
