"""`zerokv bench --contexts`: a tiny model at two context lengths, every backend exact with full windows."""

from __future__ import annotations

import dataclasses
import json

import pytest

from zerokv.bench.configs import Budget
from zerokv.bench.contexts import (
    SPLIT_BUCKETS,
    memory_model,
    parse_contexts,
    render_contexts,
    run_contexts,
)
from zerokv.bench.report import write_json
from zerokv.cli import main as zerokv_main


def tiny(length: int):
    return dataclasses.replace(memory_model(length), embed_dim=32, num_layers=2, num_heads=4, support_size=5,
                               env_num=3, num_simulations=3)


@pytest.mark.slow
def test_every_backend_is_exact_with_a_full_window(tmp_path):
    result = run_contexts([6, 12], ["none", "legacy", "manager", "paged"], Budget(searches=2, warmup=1),
                          model=tiny, progress=False)
    assert [(r["context_length"], r["backend"]) for r in result.records] == [
        (n, b) for n in (6, 12) for b in ("none", "legacy", "manager", "paged")]
    for r in result.records:
        assert r["max_abs_diff_vs_none"] <= 1e-5 and r["fallbacks"] == 0 and r["trees_match_none"], r["backend"]
        assert r["root_past_tokens"] == r["context_length"] - 1
        split = r["time_split"]
        assert set(SPLIT_BUCKETS) <= set(split) and abs(sum(split[k] for k in SPLIT_BUCKETS) - 1) < 1e-6
    assert [r["speedup_vs_none"] for r in result.records if r["backend"] == "none"] == [1.0, 1.0]
    assert result.meta["configs"]["ctx12"]["prefill_steps"] == 6
    table = render_contexts(result)
    assert "paged" in table and "x none" in table
    write_json(result, tmp_path / "c.json")
    assert len(json.loads((tmp_path / "c.json").read_text())) == 8
    assert json.loads((tmp_path / "c.meta.json").read_text())["contexts"] == [6, 12]


@pytest.mark.parametrize("text, match", [("", "selects nothing"), ("16,x", "not an integer"), ("15", "even"),
                                         ("0", "even"), ("8192", "even")])
def test_bad_contexts_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        parse_contexts(text)


def test_contexts_refuses_the_other_modes(capsys):
    with pytest.raises(SystemExit) as exc:
        zerokv_main(["bench", "--contexts", "16", "--configs", "small", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zerokv bench: error: ") and "drop --configs" in err, err
