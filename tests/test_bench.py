"""The benchmark on a tiny config: record shape, exactness vs "none", and bad-flag errors."""

import json
import math

import pytest

from zerokv.bench import CONFIGS, Budget, main, render, run_bench, write_json, write_plot
from zerokv.bench.configs import resolve_backends
from zerokv.model.config import WorldModelConfig

TINY = WorldModelConfig(
    observation_shape=(4,), action_space_size=3, embed_dim=32, num_layers=2, num_heads=4,
    context_length=4, max_tokens=8, env_num=3, num_simulations=4, support_size=10,
)
# context_length=4 makes the window slide inside a 4-simulation search (depth > 1 step).

KEYS = {
    "config": str, "backend": str, "searches_per_s": float, "sims_per_s": float,
    "expansions_per_s": float, "recurrent_ms": float, "cache_share": float,
    "bytes_copied_per_node": float, "bytes_stored_per_node": float, "host_syncs_per_sim": float,
    "hit_rate": float, "fallbacks": int, "peak_rss_mb": float, "max_abs_diff_vs_none": float,
}


@pytest.fixture(scope="module")
def tiny_result():
    backends = resolve_backends("legacy,manager", with_reference=True)
    assert backends == ["none", "legacy", "manager"]  # the reference is added, and runs first
    return run_bench({"tiny": TINY}, backends, Budget(searches=2, warmup=1), progress=False)


def test_records_have_the_keys_and_types(tiny_result):
    assert [r["backend"] for r in tiny_result.records] == ["none", "legacy", "manager"]
    for rec in tiny_result.records:
        for key, typ in KEYS.items():
            assert isinstance(rec[key], typ), (key, rec[key])
        assert rec["config"] == "tiny"
        assert rec["searches_per_s"] > 0 and rec["sims_per_s"] == pytest.approx(TINY.num_simulations * rec["searches_per_s"])
        assert rec["expansions_per_s"] == pytest.approx(TINY.env_num * rec["sims_per_s"])
        assert 0.0 <= rec["cache_share"] <= 1.0
        assert rec["peak_rss_mb"] > 0 and len(rec["per_search"]) == 2


def test_cached_backends_are_exact_and_always_hit(tiny_result):
    for rec in tiny_result.records:
        assert rec["max_abs_diff_vs_none"] <= 1e-5, rec["diff_by_output"]
        assert rec["trees_match_none"] is True
        assert rec["hit_rate"] == 1.0
        assert rec["fallbacks"] == 0
    assert tiny_result.records[0]["max_abs_diff_vs_none"] == 0.0


def test_report_json_and_plot(tiny_result, tmp_path):
    text = render(tiny_result)
    assert "old (legacy)" in text and "new (manager)" in text and "speedup" in text
    assert "tiny/none" in text
    write_json(tiny_result, tmp_path / "b.json")
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["backend"] for r in doc] == ["none", "legacy", "manager"]
    assert set(KEYS) <= set(doc[0])
    write_plot(tiny_result, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_diff_reports_nan_and_null(tmp_path):
    result = run_bench({"tiny": TINY}, ["manager"], Budget(searches=1, warmup=1), diff=False, progress=False)
    (rec,) = result.records
    assert math.isnan(rec["max_abs_diff_vs_none"])
    write_json(result, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())[0]["max_abs_diff_vs_none"] is None


def test_main_runs_end_to_end(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(CONFIGS, "tiny", TINY)
    out = tmp_path / "bench.json"
    main(["--configs", "tiny", "--quick", "--simulations", "3", "--searches", "1",
          "--no-progress", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "QUICK RUN" in printed and "tiny/manager" in printed
    assert json.loads((tmp_path / "bench.meta.json").read_text())["quick"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "pong"], "unknown config 'pong'; allowed: small, atari"),
        (["--configs", ","], "selects nothing"),
        (["--backends", "none,paged-ish"], "unknown backend 'paged-ish'; allowed: none, legacy, manager"),
        (["--searches", "0"], "searches=0; must be an int >= 1"),
        (["--warmup", "0"], "warmup=0; must be an int >= 1"),
        (["--simulations", "0"], "simulations=0"),
        (["--threads", "0"], "threads=0; must be an int >= 1"),
    ],
)
def test_bad_flags_name_the_value_and_what_is_allowed(argv, message):
    with pytest.raises(SystemExit, match="zerokv bench: error: .*") as exc:
        main([*argv, "--no-progress"])
    assert message in str(exc.value)
