"""The docs: the README stays a front door, every relative link in the README and under docs/
resolves (file and anchor), every page is in the site's nav, and the site builds with warnings as
errors from whatever environment runs the tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def without_code(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are not links)."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", markdown)


def links(markdown: str) -> list[str]:
    """Relative link and image targets of a Markdown text (no URLs, no mail)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", without_code(markdown))
    return [t for t in targets if not t.startswith(("http://", "https://", "mailto:"))]


def slugs(markdown: str) -> set[str]:
    """Anchors of the headings that both renderers make alike: python-markdown's toc (the site)
    and GitHub's (the repository view) differ where a heading has a dash or a run of spaces, so
    an anchor counts only when the two agree."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M),
                              flags=re.M):
        text = heading.replace("`", "").strip()
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        site = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
        github = re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text.lower()))
        if site == github:
            found.add(site)
    return found


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_section = text.index("\n## ")
    for command in ("bash scripts/run.sh", "bash scripts/test.sh"):
        assert command in text[:first_section], f"{command!r} belongs at the top of the README"
    for heading in ("## Install", "## Quick start: Python", "## Quick start: command line", "## Where to go next",
                    "## Layout", "## Tests"):
        assert heading in text


def test_every_relative_link_in_the_readme_and_the_docs_resolves():
    broken = []
    for doc in markdown_files():
        for target in links(doc.read_text()):
            path, _, anchor = target.partition("#")
            page = (doc.parent / path).resolve() if path else doc
            if not page.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and page.suffix == ".md" and anchor not in slugs(page.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no heading with that anchor)")
            elif doc.is_relative_to(DOCS) and not page.is_relative_to(DOCS):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (outside docs/: not in the site)")
    assert not broken, "\n".join(broken)


def test_the_link_checker_catches_a_missing_file_and_a_missing_anchor():
    assert links("see [a](a.md#x), ![img](results/b.png), `[c](c.md)` and [web](https://x.org)") == [
        "a.md#x", "results/b.png"]
    assert slugs("# Cache backends\n## KV storage dtypes\n## A — B\n") == {"cache-backends", "kv-storage-dtypes"}


def nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_under_docs_is_in_the_sites_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = nav_pages(config["nav"])
    assert len(pages) == len(set(pages))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert set(pages) == on_disk


def test_every_public_name_has_a_row_in_the_api_reference():
    import ast

    tree = ast.parse((ROOT / "zerokv" / "__init__.py").read_text())  # no torch import: stays fast
    (public,) = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(target, "id", None) == "__all__" for target in node.targets)]
    page = (DOCS / "api" / "zerokv.md").read_text()
    missing = [name for name in public if name != "__version__" and f"[`{name}`]" not in page]
    assert not missing, f"docs/api/zerokv.md lacks {missing}"


@pytest.mark.slow  # renders every page and the API reference from the docstrings
def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # no banner about mkdocs 2
    assert done.returncode == 0, (
        "mkdocs build --strict failed (the docs extra: pip install -e '.[docs]'):\n" + done.stderr[-4000:])
    world_model = (tmp_path / "site" / "api" / "zerokv" / "index.html").read_text()
    assert "from_pretrained" in world_model and "observation_shape" in world_model
    assert ":func:" not in world_model  # Sphinx roles render as code (scripts/griffe_roles.py)
    assert "TrainConfig" in (tmp_path / "site" / "api" / "rl" / "index.html").read_text()
    assert (tmp_path / "site" / "results" / "learning_study.png").is_file()
