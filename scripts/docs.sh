#!/usr/bin/env bash
# Builds the API reference from the docstrings into docs/api/ (or $1): HTML, one page per module
# (open docs/api/index.html). Needs the docs extra (pdoc), which scripts/setup.sh installs.
# Every module is named: zerokv's __all__ lists its public names, not its submodules, so
# `pdoc zerokv` alone would document only the package page.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/api}
mapfile -t modules < <(.venv/bin/python -c '
import pkgutil, zerokv
print("zerokv")
for m in pkgutil.walk_packages(zerokv.__path__, "zerokv."):
    if m.name != "zerokv.__main__":
        print(m.name)')
# A package also adds the submodules it exposes: pdoc warns about naming those twice; drop that.
.venv/bin/pdoc --docformat restructuredtext --output-directory "$out" "${modules[@]}" \
  2> >(grep -v "has already been added" >&2)
echo "API reference: $out/index.html (${#modules[@]} modules)"
