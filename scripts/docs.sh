#!/usr/bin/env bash
# Builds the docs as a site (mkdocs.yml: the guides under docs/ and the API reference from the
# docstrings) into site/ (or $1), with warnings as errors. Needs the docs extra, which
# scripts/setup.sh installs. Preview while editing: .venv/bin/mkdocs serve
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-site}
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --site-dir "$out"
echo "docs site: $out/index.html"
