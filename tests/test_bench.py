"""The benchmark on a tiny config: record shape, exactness vs "none", interleaving, FLOP floor, bad flags."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from zerokv import WorldModel
from zerokv.bench import (
    CONFIGS,
    Budget,
    documented_bound_bytes,
    render,
    run_bench,
    run_soak,
    write_json,
    write_plot,
)
from zerokv.bench.configs import resolve_backends
from zerokv.bench.multileaf import (
    SearchMode,
    parse_leaves,
    parse_wide_envs,
    policy_distance,
    position_noise,
    render_multi_leaf,
    run_modes_config,
    run_multi_leaf,
    search_modes,
    search_with_noise,
)
from zerokv.bench.precision import render_precision, run_precision
from zerokv.bench.reanalysis import run_reanalysis
from zerokv.bench.recording import (
    NETWORK_OUTPUTS,
    RecordedCall,
    RecordedRoot,
    Trace,
    TraceDiff,
    compare_traces,
)
from zerokv.bench.run import MatmulProbe, recurrent_flops, rotated
from zerokv.bench.soak import soak_backend
from zerokv.bench.storage import parse_storage_dtypes, render_storage, run_storage
from zerokv.cli import main as zerokv_main
from zerokv.model.config import WorldModelConfig
from zerokv.search import SearchConfig, plan
from zerokv.search.tree import legal_dirichlet

TINY = WorldModelConfig(
    observation_shape=(4,), action_space_size=3, embed_dim=32, num_layers=2, num_heads=4,
    context_length=4, max_tokens=8, env_num=3, num_simulations=4, support_size=10,
)
# context_length=4 makes the window slide inside a 4-simulation search (depth > 1 step).
BACKENDS = ["none", "legacy", "manager", "paged"]
# One torch thread: tiny matmuls on 2 threads crawl when another process holds the CPU.
THREADS = 1

KEYS = {
    "config": str, "backend": str, "searches_per_s": float, "sims_per_s": float,
    "expansions_per_s": float, "recurrent_ms": float, "cache_share": float,
    "bytes_copied_per_node": float, "bytes_stored_per_node": float, "host_syncs_per_sim": float,
    "hit_rate": float, "fallbacks": int, "peak_rss_mb": float, "cache_mb": float, "cache_bytes": int,
    "max_abs_diff_vs_none": float, "max_rel_diff_scalars_vs_none": float, "trees_match_none": bool,
    "floor_ms": float, "flop_floor_ms": float, "recurrent_vs_floor": float, "matmul_gflops": float,
    "recurrent_gflop": float, "other_processes_cpu_share": float,
}


@pytest.fixture(scope="module")
def tiny_result():
    backends = resolve_backends("legacy,manager,paged", with_reference=True)
    assert backends == BACKENDS  # the reference is added, and listed first
    return run_bench({"tiny": TINY}, backends, Budget(searches=2, warmup=1), threads=THREADS, progress=False)


def test_records_have_the_keys_and_types(tiny_result):
    assert [r["backend"] for r in tiny_result.records] == BACKENDS
    for rec in tiny_result.records:
        for key, typ in KEYS.items():
            assert isinstance(rec[key], typ), (key, rec[key])
        assert rec["config"] == "tiny"
        assert rec["searches_per_s"] > 0 and rec["sims_per_s"] == pytest.approx(TINY.num_simulations * rec["searches_per_s"])
        assert rec["expansions_per_s"] == pytest.approx(TINY.env_num * rec["sims_per_s"])
        assert 0.0 <= rec["cache_share"] <= 1.0
        assert rec["cache_mb"] == pytest.approx(rec["cache_bytes"] / 2**20)
        assert rec["flop_floor_ms"] > 0 and rec["recurrent_vs_floor"] == pytest.approx(rec["recurrent_ms"] / rec["flop_floor_ms"])
        assert len(rec["per_search"]) == 2
        # RSS is a process figure (all backends alive at once): the same for every record of a config.
        assert rec["peak_rss_mb"] == tiny_result.records[0]["peak_rss_mb"] > 0
    assert tiny_result.meta["peak_rss_mb"] >= tiny_result.records[0]["peak_rss_mb"]


def test_cached_backends_are_exact_and_always_hit(tiny_result):
    for rec in tiny_result.records:
        assert rec["max_abs_diff_vs_none"] <= 1e-5, rec["diff_by_output"]
        assert rec["max_rel_diff_scalars_vs_none"] <= 1e-5, rec["rel_diff_by_output"]
        assert set(NETWORK_OUTPUTS) <= set(rec["diff_by_output"])  # value/reward logits included
        assert rec["trees_match_none"] is True
        assert rec["hit_rate"] == 1.0
        assert rec["fallbacks"] == 0
    assert tiny_result.records[0]["max_abs_diff_vs_none"] == 0.0


def test_backends_are_interleaved_in_rotating_order(tiny_result):
    orders = tiny_result.meta["configs"]["tiny"]["search_orders"]
    assert orders == [BACKENDS, rotated(BACKENDS, 1)] == [BACKENDS, ["legacy", "manager", "paged", "none"]]
    for j, rec in enumerate(tiny_result.records):
        assert [s["position"] for s in rec["per_search"]] == [j, (j - 1) % len(BACKENDS)]


def test_flop_count_by_hand():
    e, r, bins, a, b, w, layers = 32, 4, 21, 3, 3, 4, 2
    blocks = 2 * layers * (3 * e * e + e * e + 2 * r * e * e)
    heads = (e * e + e * bins) + 2 * e * e + (e * e + e * bins) + (e * e + e * a)
    attention = 2 * layers * 2 * e * w
    flops = recurrent_flops(TINY)
    assert flops["matmul"] == 2 * b * (blocks + heads)
    assert flops["total"] == 2 * b * (blocks + heads + attention)


def _outputs(value: float, logits: list[float], reward=None) -> dict:
    out = {"value": np.array([value]), "policy_logits": np.array([logits]), "value_logits": np.array([logits]),
           "latent_state": np.array([logits])}
    if reward is not None:
        out |= {"reward": np.array([reward]), "reward_logits": np.array([logits])}
    return out


def test_compare_traces_by_hand():
    def trace(root_value, call_value, action, visits):
        call = RecordedCall([0], np.array([action]), np.array([0]), np.array([1]),
                            _outputs(call_value, [0.0, 1.0], reward=1.0))
        return Trace([RecordedRoot(np.zeros((1, 2)), _outputs(root_value, [0.0, 0.0]))], [call],
                     [np.array([visits])])

    ref = trace(4.0, 0.5, 1, [1, 0])
    same = compare_traces(ref, trace(4.0, 0.5, 1, [1, 0]))
    assert isinstance(same, TraceDiff) and same.same_tree
    assert same.max_abs_network == same.max_rel_scalars == 0.0
    # value: |4 - 2| = 2 at the root, relative 2 / max(1, 4) = 0.5; |0.5 - 0.25| = 0.25 relative 0.25
    d = compare_traces(ref, trace(2.0, 0.25, 1, [1, 0]))
    assert d.abs_by_output["value"] == 2.0 and d.rel_by_scalar["value"] == 0.5
    assert d.max_abs_network == 0.0 and d.max_rel_scalars == 0.5 and d.same_tree
    assert not compare_traces(ref, trace(4.0, 0.5, 0, [1, 0])).same_tree  # another action
    assert not compare_traces(ref, trace(4.0, 0.5, 1, [0, 1])).same_tree  # other visit counts
    shorter = compare_traces(ref, Trace(ref.roots, [], ref.visit_counts))
    assert shorter.max_abs_network == math.inf and not shorter.same_tree


def test_multi_leaf_records_speed_and_policy_change_for_every_dtype_and_width():
    records = run_multi_leaf({"tiny": TINY}, [2], Budget(searches=2, warmup=1), dtypes=("float32", "bfloat16"),
                             wide_envs=[(6, None), (6, 2)])
    widths = ((3, 4), (6, 4), (6, 2))
    assert [(r["dtype"], r["leaves_per_call"], r["env_num"], r["num_simulations"], r["other_noise"])
            for r in records] == [(d, k, e, s, False) for e, s in widths for d in ("float32", "bfloat16")
                                  for k in (1, 2)] + [("float32", 1, 3, 4, True)]
    one, two, noise = records[0], records[1], records[-1]
    assert one["kl"] == one["tv"] == 0.0 and one["top_action_agrees"] == 1.0 and one["speedup"] == 1.0
    assert one["calls_per_search"] == TINY.num_simulations and one["rows_per_call"] == TINY.env_num
    assert two["calls_per_search"] < TINY.num_simulations and two["rows_per_call"] > TINY.env_num
    assert two["positions"] == 2 * TINY.env_num and two["kl"] >= 0 and 0 <= two["tv"] <= 1
    assert noise["leaves_per_call"] == 1 and noise["calls_per_search"] == TINY.num_simulations
    assert noise["kl"] > 0 and noise["kl_vs_noise"] == 1.0
    for rec in records:
        assert rec["searches_per_s"] > 0 and rec["env_steps_per_s"] == rec["env_num"] * rec["searches_per_s"]
        assert rec["env_num"] * rec["num_simulations"] == rec["expansions_per_search"]
        assert rec["expansions_per_s"] == rec["expansions_per_search"] * rec["searches_per_s"]
        assert rec["speedup"] == pytest.approx(rec["expansions_per_s"] / one["expansions_per_s"])
        assert rec["kl_vs_noise"] == pytest.approx(rec["kl"] / noise["kl"])
    same_sims, split = records[4], records[8]  # 6 envs × 4 simulations, 6 × 2; float32 one-leaf
    assert same_sims["calls_per_search"] == 4 and same_sims["rows_per_call"] == 6
    assert same_sims["expansions_per_search"] == 24 and same_sims["timed_searches"] == 1
    # every tree searched as in the baseline, only two positions' trees share each call: same visits
    assert same_sims["kl"] == same_sims["tv"] == 0.0 and same_sims["top_action_agrees"] == 1.0
    assert split["calls_per_search"] == 2 and split["rows_per_call"] == 6 and split["expansions_per_search"] == 12
    text = render_multi_leaf(records)
    assert "bfloat16" in text and "6×4" in text and "6×2" in text and "KL/noise" in text


def test_search_modes_see_the_same_noise_whatever_the_batching():
    """Root noise is drawn per position: 6 envs per search and 3 give the same trees, and the
    noised search forms the root prior exactly as muzero_search does from its own draw."""
    modes = [SearchMode("float32", 1, 3, 4), SearchMode("float32", 1, 6, 4), SearchMode("float32", 1, 3, 4, True)]
    base, wide, noise = run_modes_config("tiny", TINY, lambda cfg: modes, Budget(searches=2, warmup=1))
    assert wide["kl"] == wide["tv"] == 0.0 and wide["top_action_agrees"] == 1.0 and noise["kl"] > 0
    torch.manual_seed(0)
    wm = WorldModel(dataclasses.replace(TINY, cache_backend="paged")).eval()
    obs = np.random.default_rng(1).random((3, 4), dtype=np.float32)
    search = SearchConfig(num_simulations=4)
    drawn = legal_dirichlet(np.random.default_rng(5), search.dirichlet_alpha, np.ones((3, 3), dtype=bool))
    given = search_with_noise(wm, obs, search, drawn)
    wm.clear_caches()
    own = plan(wm, obs, config=search, rng=np.random.default_rng(5), add_noise=True)
    np.testing.assert_array_equal(given.visit_counts, own.visit_counts)
    per_position = position_noise(7, 6, 3, 0.3)
    np.testing.assert_array_equal(per_position[3:], position_noise(7, 6, 3, 0.3)[3:])
    assert per_position.shape == (6, 3) and np.allclose(per_position.sum(1), 1.0)
    modes = search_modes(dataclasses.replace(TINY, cache_backend="paged"), [2], ["float32"],
                         [(3, None), (5, None), (5, 4), (6, 2)])  # (3, config sims) and (5, 4) repeat a width
    assert [(m.env_num, m.num_simulations, m.leaves_per_call, m.other_noise) for m in modes] == [
        (3, 4, 1, False), (3, 4, 2, False), (5, 4, 1, False), (5, 4, 2, False), (6, 2, 1, False), (6, 2, 2, False),
        (3, 4, 1, True)]


def test_reanalysis_records_roots_per_second_and_the_same_answers():
    chunked, wide, bf16_chunked, bf16_wide = run_reanalysis({"tiny": TINY}, 12, Budget(searches=1, warmup=1))
    sims = TINY.num_simulations
    assert (chunked["roots_per_call"], chunked["model_calls"], chunked["speedup"]) == (8, 2 * sims, 1.0)
    assert (wide["roots_per_call"], wide["model_calls"], wide["rows_per_call"]) == (12, sims, 12)
    assert wide["roots_per_s"] > 0 and wide["speedup"] == wide["roots_per_s"] / chunked["roots_per_s"]
    assert wide["max_root_value_diff"] <= 1e-5 and wide["same_visits"] == 1.0 and wide["policy_tv"] == 0.0
    assert [r["dtype"] for r in (chunked, wide, bf16_chunked, bf16_wide)] == ["float32"] * 2 + ["bfloat16"] * 2
    assert bf16_wide["model_calls"] == sims and 0 <= bf16_wide["policy_tv"] <= 1
    assert bf16_wide["max_root_value_diff"] > 0  # really another precision
    for rec in (chunked, wide, bf16_chunked, bf16_wide):
        assert rec["matmul_floor_s"] > 0 and rec["vs_floor"] == rec["seconds"] / rec["matmul_floor_s"]
        assert rec["speedup_bound"] == chunked["seconds"] / rec["matmul_floor_s"]


@pytest.mark.slow
def test_precision_records_speed_output_difference_and_policy_change():
    records = run_precision({"tiny": TINY}, Budget(searches=2, warmup=1))
    assert [r["label"] for r in records] == ["float32", "bfloat16", "float32, other noise"]
    f32, bf16, noise = records
    assert f32["speedup"] == 1.0 and f32["kl"] == f32["tv"] == 0.0 and f32["top_action_agrees"] == 1.0
    # The float32 search replayed on "none" is exact; the bf16 one is off by bf16 rounding, no more
    # (tolerances as in tests/test_bfloat16.py).
    assert f32["max_abs_diff_vs_none"] <= 1e-5 and f32["max_rel_diff_scalars_vs_none"] <= 1e-5
    assert 1e-4 < bf16["max_abs_diff_vs_none"] <= 5e-2 and bf16["max_rel_diff_scalars_vs_none"] <= 0.1
    assert set(NETWORK_OUTPUTS) <= set(bf16["diff_by_output"])
    for rec in (f32, bf16):
        assert rec["searches_per_s"] > 0 and rec["recurrent_ms"] > 0
        assert rec["vs_float32_floor"] == pytest.approx(rec["recurrent_ms"] / rec["float32_floor_ms"])
        assert rec["vs_bfloat16_floor"] == pytest.approx(rec["recurrent_ms"] / rec["bfloat16_floor_ms"])
    assert bf16["float32_matmul_gflops"] > 0 and bf16["bfloat16_matmul_gflops"] > 0
    assert bf16["positions"] == 2 * TINY.env_num and 0 <= bf16["tv"] <= 1 and bf16["kl"] >= 0
    assert math.isnan(noise["searches_per_s"]) and noise["diff_by_output"] is None and noise["kl"] >= 0
    text = render_precision(records)
    assert "/ bf16 floor" in text and "float32, other noise" in text


def test_storage_dtypes_record_memory_speed_output_and_policy_change_and_snapshots():
    dtypes = parse_storage_dtypes("int8,bfloat16")
    assert dtypes == ["float32", "int8", "bfloat16"]  # the baseline first
    result = run_storage({"tiny": TINY}, Budget(searches=2, warmup=1), dtypes=dtypes, roots=[5, 9])
    search = {r["storage"]: r for r in result["search"]}
    assert list(search) == [*dtypes, "float32, other noise"]
    f32, i8, bf16 = search["float32"], search["int8"], search["bfloat16"]
    hd = TINY.embed_dim // TINY.num_heads
    assert f32["node_bytes"] == 2 * 2 * TINY.num_layers * TINY.embed_dim * 4
    assert i8["node_bytes"] == 2 * 2 * TINY.num_layers * TINY.num_heads * (hd + 2)  # bf16 scales counted
    assert bf16["memory_ratio"] == 2.0 and i8["memory_ratio"] == f32["node_bytes"] / i8["node_bytes"]
    assert f32["speedup"] == 1.0 and f32["kl"] == 0.0 and max(f32["diff_by_output"].values()) == 0.0
    for rec in (i8, bf16):
        assert 0 < rec["diff_by_output"]["policy_logits"] < 0.1  # lossy, not wrong
        assert rec["searches_per_s"] > 0 and rec["positions"] == 2 * TINY.env_num
    assert "diff_by_output" not in search["float32, other noise"]
    reanalysis = result["reanalysis"]
    labels = [*dtypes, "float32, other noise"]
    assert [(r["roots"], r["storage"]) for r in reanalysis] == [(n, d) for n in (5, 9) for d in labels]
    by = {(r["roots"], r["storage"]): r for r in reanalysis}
    assert by[9, "int8"]["arena_mib"] < by[9, "float32"]["arena_mib"] / 3
    assert by[9, "float32"]["speedup"] == 1.0 and by[9, "float32"]["kl"] == 0.0
    snapshots = result["snapshot"]
    assert [r["storage"] for r in snapshots] == dtypes and all(r["exact"] for r in snapshots)
    assert all(r["roots"] == TINY.env_num and r["load_ms"] > 0 and r["rebuild_ms"] > 0 for r in snapshots)
    text = render_storage(result)
    assert "KV storage dtypes" in text and "Reanalysis (one arena" in text and "next root exact" in text


def test_matmul_probe_in_bfloat16():
    probe = MatmulProbe(TINY, dtype=torch.bfloat16, calls=1, repeats=1)
    assert {w.dtype for w, _ in probe.weights.values()} == {torch.bfloat16}
    assert probe.sample() > 0


def test_policy_distance_by_hand():
    base = np.array([[3, 1], [0, 4]])
    same = policy_distance(base, base)
    assert same == {"kl": 0.0, "tv": 0.0, "top_action_agrees": 1.0}
    flipped = policy_distance(base, base[:, ::-1])
    p = np.array([3.5, 1.5]) / 5
    q = np.array([0.5, 4.5]) / 5
    kl_row0 = (p * np.log(p / p[::-1])).sum()
    kl_row1 = (q * np.log(q / q[::-1])).sum()
    assert flipped["kl"] == pytest.approx((kl_row0 + kl_row1) / 2)
    assert flipped["tv"] == pytest.approx((0.5 + 1.0) / 2) and flipped["top_action_agrees"] == 0.0
    assert parse_leaves("8, 4,4") == [4, 8]
    with pytest.raises(ValueError, match="'1'; each must be an int >= 2"):
        parse_leaves("1,4")
    assert parse_wide_envs("16, 32,16,16X25") == [(16, None), (16, 25), (32, None)]
    with pytest.raises(ValueError, match="--wide-envs value '16x0'"):
        parse_wide_envs("16x0")
    with pytest.raises(ValueError, match="--wide-envs value 'x'"):
        parse_wide_envs("x")


def test_report_and_json(tiny_result, tmp_path):
    text = render(tiny_result)
    header = next(line for line in text.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "old", "(legacy)", "manager", "paged", "manager×", "paged×"]
    assert "tiny/none" in text and "tiny/paged" in text and "FLOP floor" in text and "peak RSS" in text
    assert "visit counts = none" in text and "note: max_rel_diff_scalars_vs_none" in text
    write_json(tiny_result, tmp_path / "b.json")
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["backend"] for r in doc] == BACKENDS
    assert set(KEYS) <= set(doc[0])
    meta = json.loads((tmp_path / "b.meta.json").read_text())
    assert meta["peak_rss_mb"] > 0 and meta["configs"]["tiny"]["matmul_gflops"] > 0


@pytest.mark.slow
def test_plot(tiny_result, tmp_path):  # slow: matplotlib's import
    write_plot(tiny_result, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_diff_reports_nan_and_null(tmp_path):
    result = run_bench({"tiny": TINY}, ["paged"], Budget(searches=1, warmup=1), diff=False, threads=THREADS,
                       progress=False)
    (rec,) = result.records
    assert math.isnan(rec["max_abs_diff_vs_none"]) and math.isnan(rec["max_rel_diff_scalars_vs_none"])
    assert rec["trees_match_none"] is None
    write_json(result, tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())[0]["max_abs_diff_vs_none"] is None


@pytest.mark.slow
def test_main_runs_end_to_end(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(CONFIGS, "tiny", TINY)
    out = tmp_path / "bench.json"
    zerokv_main(["bench", "--configs", "tiny", "--quick", "--simulations", "4", "--searches", "1", "--threads", str(THREADS),
                 "--no-progress", "--json", str(out), "--multi-leaf", "2", "--precision", "--reanalyze", "10",
                 "--wide-envs", "6", "--storage-dtypes", "int8", "--storage-roots", "4"])
    printed = capsys.readouterr().out
    assert "QUICK RUN" in printed and "backends=none,legacy,manager,paged" in printed
    assert "tiny/manager" in printed and "tiny/paged" in printed
    meta = json.loads((tmp_path / "bench.meta.json").read_text())
    assert meta["quick"] is True and [r["leaves_per_call"] for r in meta["multi_leaf"]] == [1, 2] * 4 + [1]
    assert [r["dtype"] for r in meta["multi_leaf"]] == (["float32"] * 2 + ["bfloat16"] * 2) * 2 + ["float32"]
    assert [r["env_num"] for r in meta["multi_leaf"]] == [3] * 4 + [6] * 4 + [3]
    assert "Search modes" in printed and "Reanalysis of 10 replayed positions" in printed
    assert [r["roots_per_call"] for r in meta["reanalysis"]] == [8, 10, 8, 10]
    assert [r["label"] for r in meta["precision"]] == ["float32", "bfloat16", "float32, other noise"]
    assert "Precision: bfloat16 search model vs float32" in printed
    assert [r["storage"] for r in meta["storage"]["reanalysis"]] == ["float32", "int8", "float32, other noise"]
    assert "KV storage dtypes" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "pong"], "unknown config 'pong'; allowed: small, atari, cartpole"),
        (["--configs", ","], "selects nothing"),
        (["--backends", "none,paged-ish"], "unknown backend 'paged-ish'; allowed: none, legacy, manager, paged"),
        (["--backends", ","], "selects nothing; allowed: none, legacy, manager, paged"),
        (["--searches", "0"], "searches=0; must be a positive int"),
        (["--reanalyze", "4"], "--reanalyze 4; must be an int >= 8"),
        (["--warmup", "0"], "warmup=0; must be a positive int"),
        (["--simulations", "0"], "simulations=0"),
        (["--threads", "0"], "threads=0; must be a positive int"),
        (["--storage-dtypes", "int8,float16"], "float16 is unknown; allowed: float32, bfloat16, float8_e4m3fn, int8"),
        (["--storage-roots", "0"], "--storage-roots '0'; give ints >= 1"),
        (["--soak", "1"], "searches=1; must be an int >= 2"),
        (["--soak", "5", "--precision", "--quick"], "--soak runs alone; drop --precision, --quick"),
        (["--soak", "5", "--backends", "pagd"], "unknown backend 'pagd'"),
        (["--searches", "many"], "--searches"),
    ],
)
def test_bad_flags_name_the_value_and_what_is_allowed(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        zerokv_main(["bench", *argv, "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zerokv bench: error: ") and err.count("\n") == 1, err  # one line
    assert message in err


# ----------------------------------------------------------------------------- soak
# Pools small enough that a handful of searches fills them: init pools of 5 roots, a recurrent
# pool of env_num * (num_simulations + 1) = 15 nodes.
SOAK_TINY = dataclasses.replace(TINY, init_pool_size=TINY.num_simulations + 1)


def slot_bytes(cfg: WorldModelConfig) -> int:
    return 2 * cfg.num_layers * cfg.max_tokens * cfg.embed_dim * 4  # float32 keys and values


def test_soak_samples_memory_and_keeps_every_store_within_its_documented_size():
    searches = 12
    records = run_soak({"tiny": SOAK_TINY}, ["none", "legacy", "manager", "paged"], searches, isolate=False,
                       progress=False, threads=THREADS)
    assert [r["backend"] for r in records] == ["none", "legacy", "manager", "paged"]
    for rec in records:
        assert rec["searches"] == searches and rec["warmup"] == 1 and not rec["isolated"]
        assert [s["searches"] for s in rec["samples"]] == list(range(1, searches + 1))  # 12 // 20 -> every one
        assert rec["rss_start_mb"] > 0 and rec["rss_max_mb"] >= rec["rss_end_mb"]
        assert rec["growth_after_warmup_mb"] == pytest.approx(rec["rss_end_mb"] - rec["rss_warm_mb"])
        assert rec["samples"][-1]["cache_mb"] == pytest.approx(rec["cache_bytes"] / 2**20)
        assert rec["fallbacks"] == 0 and rec["misses"] == 0 and rec["hits"] > 0
    none, legacy, manager, paged = records
    assert none["bound_bytes"] is None and none["cache_within_bound"] is None
    # paged preallocates its arena: its store is its documented size from the first search on.
    assert paged["cache_bytes"] == paged["bound_bytes"] == documented_bound_bytes(
        dataclasses.replace(SOAK_TINY, cache_backend="paged"))
    assert {s["cache_mb"] for s in paged["samples"]} == {paged["cache_bytes"] / 2**20} and paged["evictions"] == 0
    # legacy and manager fill every init and recurrent slot (12 searches > 5 roots per pool), then
    # reuse them: never more than the documented size.
    filled = (TINY.env_num * SOAK_TINY.init_pool_size + TINY.env_num * (TINY.num_simulations + 1)) * slot_bytes(TINY)
    for rec in (legacy, manager):
        assert rec["cache_within_bound"] and filled <= rec["cache_bytes"] <= rec["bound_bytes"]
        assert rec["bound_bytes"] == filled + TINY.env_num * slot_bytes(TINY)  # + the world-model pool
        assert rec["evictions"] > 0
    assert legacy["cache_bytes"] == manager["cache_bytes"]


def test_soak_child_stops_when_its_parent_has_died(monkeypatch):
    """An isolated soak runs in a spawned child; if the bench that started it is killed, the child
    stops at its next search instead of running on, re-parented to init."""

    class DeadParent:
        def is_alive(self) -> bool:
            return False

    monkeypatch.setattr("zerokv.bench.soak.multiprocessing.parent_process", lambda: DeadParent())
    with pytest.raises(SystemExit, match="'paged': the parent process died after 0 searches"):
        soak_backend(dataclasses.replace(SOAK_TINY, cache_backend="paged"), 4, progress=False, threads=THREADS)


@pytest.mark.slow
def test_soak_command_runs_each_backend_in_its_own_process(monkeypatch, tmp_path, capfd):
    monkeypatch.setitem(CONFIGS, "tiny", SOAK_TINY)
    out = tmp_path / "soak.json"
    zerokv_main(["bench", "--soak", "4", "--configs", "tiny", "--backends", "paged", "--threads", str(THREADS),
                 "--json", str(out)])
    printed = capfd.readouterr().out  # the child process writes to the file descriptor
    assert "tiny/paged" in printed and "paged: 4/4 searches, RSS" in printed
    (rec,) = json.loads(out.read_text())
    assert rec["isolated"] and rec["backend"] == "paged" and rec["cache_within_bound"] is True
    assert json.loads((tmp_path / "soak.meta.json").read_text())["soak"] == 4
