"""scripts/readme_commands.py (CI runs it after the suite) knows every README command: the README
and its plan cannot drift apart unnoticed, even in the fast subset."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
readme_commands = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = readme_commands  # dataclasses look their module up
spec.loader.exec_module(readme_commands)


def test_every_readme_command_has_a_plan_and_every_plan_a_command():
    found = readme_commands.snippets((ROOT / "README.md").read_text())
    used = {readme_commands.rule_for(s)[0] for s in found}
    assert used == set(readme_commands.PLAN)
    assert "zerokv train --out runs/cartpole --resume" in used and any(s.kind == "python" for s in found)


def test_snippets_drop_comments_keep_quotes_and_reject_an_unknown_command():
    text = "x\n```bash\nzerokv plot runs/cartpole   # a comment\n\npytest -m \"not slow\"\n```\n```\nnot code\n```\n"
    found = readme_commands.snippets(text)
    assert [(s.kind, s.text, s.line) for s in found] == [("bash", "zerokv plot runs/cartpole", 3),
                                                         ("bash", "pytest -m 'not slow'", 5)]
    with pytest.raises(readme_commands.CheckFailed, match="line 5: \"pytest -m 'not slow'\" is not in"):
        readme_commands.rule_for(found[1])
