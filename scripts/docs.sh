#!/usr/bin/env bash
# Builds the API reference from the docstrings into docs/api/ (HTML, one page per module; open
# docs/api/index.html). Needs the docs extra (pdoc), which scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/api}
.venv/bin/pdoc --docformat restructuredtext --output-directory "$out" zerokv
echo "API reference: $out/index.html"
