"""A griffe extension for the docs site (mkdocs.yml loads it): zerokv's docstrings name other
objects with Sphinx roles (``:func:`plan```, ``:class:`~zerokv.WorldModel```), which Markdown would
print verbatim; this turns each into inline code (``plan``) before mkdocstrings renders it."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const|type):`~?([^`]+)`")


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
