"""Collectors on Ray (`--collectors N`): the worker in-process (weights, caches, versions), the
import rules, and on one local loopback-only cluster per module: a two-collector run with resume,
a killed collector restarted by Ray, a silent collector named by the timeout."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import psutil
import pytest
import torch

from zerokv import WorldModel
from zerokv.cli import main
from zerokv.model.world_model import NO_ACTION
from zerokv.rl import TrainConfig, latest_checkpoint, load_checkpoint, raycluster
from zerokv.rl.factory import world_model_config
from zerokv.rl.observations import observations_as_float
from zerokv.rl.worker import NO_WEIGHTS, CollectorWorker, WeightsOffer


def tiny(out, **overrides) -> TrainConfig:
    base = dict(
        env="CartPole-v1", out=str(out), total_env_steps=64, num_envs=2, collect_steps=4,
        num_simulations=4, embed_dim=16, num_heads=2, num_layers=1, context_length=4, support_size=5,
        batch_size=4, unroll_steps=2, td_steps=2, min_replay_steps=8, segment_length=3,
        eval_episodes=1, eval_every=0, checkpoint_every=32, progress=False, history_steps=4,
        eval_max_steps=20, collectors=2, collector_cpus=0.5, collector_timeout=300.0,  # the default: a slow CI machine starts actors slowly
    )
    base.update(overrides)
    return TrainConfig(**base)


def weights(cfg: TrainConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return WorldModel(world_model_config(cfg)).state_dict()


def progress(out) -> list[dict[str, str]]:
    with open(out / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ the worker, in-process
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_new_weights_clear_every_cache_and_rebuild_the_roots_with_them(tmp_path, dtype):
    cfg = tiny(tmp_path, search_dtype=dtype)
    worker = CollectorWorker(cfg.to_dict(), 1, start_env_steps=0)
    a, b = weights(cfg, 0), weights(cfg, 1)
    with pytest.raises(RuntimeError, match="offered no weights"):
        worker.collect(1, 1.0, WeightsOffer(NO_WEIGHTS, None))
    first = worker.collect(4, 1.0, WeightsOffer(3, a))
    assert first.weights_version == 3 and first.env_steps == 8 and first.index == 1
    assert first.segments and {seg.weights_version for seg in first.segments} == {3}
    assert first.cache["fallbacks"] == first.cache["misses"] == 0 and first.cache["hits"] > 0
    # New weights: the model holds them (cast), and only roots rebuilt with them are cached.
    worker.load_weights(7, b)
    for name, tensor in worker.model.state_dict().items():
        assert torch.equal(tensor, b[name].to(tensor.dtype)), name
    stats = worker.model.cache_stats()
    assert stats.rebuilds == cfg.num_envs and stats.size == cfg.num_envs
    # Each env's next root extends its rebuilt context exactly as a model that never saw `a` does.
    tracks = worker.collector.tracks
    fresh = WorldModel(worker.model.config)
    fresh.load_state_dict(b)
    fresh.rebuild_root_contexts(
        [0, 1], [observations_as_float(np.stack(t.history_obs)).numpy() for t in tracks],
        [list(t.history_actions)[:-1] for t in tracks])
    obs, last = observations_as_float(worker.collector.obs), [t.pending_action for t in tracks]
    assert NO_ACTION not in last
    ours, theirs = worker.model.initial_inference(obs, last_actions=last), fresh.initial_inference(obs, last_actions=last)
    torch.testing.assert_close(ours.value_logits, theirs.value_logits, rtol=0, atol=0)
    torch.testing.assert_close(ours.policy_logits, theirs.policy_logits, rtol=0, atol=0)
    worker.load_weights(7, b)  # (the extra root call above started a search; rebuild again)
    second = worker.collect(8, 1.0, WeightsOffer(5, a))  # an older offer is not loaded
    assert second.weights_version == 7 and second.cache["fallbacks"] == second.cache["misses"] == 0
    assert {seg.weights_version for seg in second.segments} <= {3, 7} and 7 in {s.weights_version for s in second.segments}
    worker.close()


def test_collectors_play_different_episodes(tmp_path):
    cfg = tiny(tmp_path)
    obs = []
    for index, start in ((0, 0), (1, 0), (0, 64)):
        worker = CollectorWorker(cfg.to_dict(), index, start_env_steps=start)
        obs.append(worker.collector.obs.copy())
        worker.close()
    assert not np.array_equal(obs[0], obs[1]) and not np.array_equal(obs[0], obs[2])


# ------------------------------------------------------------------ import rules and config
@pytest.mark.slow
def test_zerokv_never_imports_ray_unless_collectors_are_asked_for():
    code = ("import sys, zerokv, zerokv.cli, zerokv.rl.trainer, zerokv.rl.distributed, zerokv.rl.worker; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_ray_is_named_with_the_extra_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]" in a zerokv clone, or pip install "zerokv-.*\.whl\[ray\]"'):
        raycluster.import_ray()
    with pytest.raises(SystemExit) as exc:
        main(["train", "--collectors", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and '".[ray]"' in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("collectors", -1, "collectors=-1; must be an int >= 0"),
    ("weight_sync_every", 0, "weight_sync_every=0; must be a positive int"),
    ("collector_queue", -1, "collector_queue=-1"),
    ("collector_timeout", 0.0, "collector_timeout=0.0; must be a finite number > 0"),
    ("collector_cpus", float("nan"), "collector_cpus=nan"),
    ("collector_restarts", 1.5, "collector_restarts=1.5"),
    ("ray_address", "", "ray_address=''"),
])
def test_bad_collector_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_is_loopback():
    assert raycluster.is_loopback("127.0.0.1") and raycluster.is_loopback("::1")
    assert raycluster.is_loopback("[::ffff:127.0.0.1]") and raycluster.is_loopback("localhost")
    assert not raycluster.is_loopback("192.0.2.2") and not raycluster.is_loopback("::ffff:192.0.2.2")
    assert not raycluster.is_loopback("example.org") and not raycluster.is_loopback("0.0.0.0")


# ------------------------------------------------------------------ on a local cluster
@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module, started as the trainer starts one, checked loopback-only."""
    ray = raycluster.import_ray()
    if ray.is_initialized():
        ray.shutdown()
    started = raycluster.connect(None, num_cpus=2)
    try:
        yield started
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_the_local_cluster_listens_on_loopback_only(cluster):
    ray = raycluster.import_ray()
    assert cluster.started and cluster.loopback, cluster
    assert cluster.gcs_address.startswith("127.0.0.1:") and cluster.node_ip == "127.0.0.1"
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"


@pytest.mark.slow
def test_local_workers_run_at_the_drivers_priority(cluster):
    # Ray's default starts workers at nice 15, which starves collectors beside a learner at nice 0.
    ray = raycluster.import_ray()

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote(), timeout=120) == os.nice(0)


def sockets_of_this_process_tree() -> list[tuple[str, str, str]]:
    """(process name, local address, remote address) of every inet socket of this process and its
    descendants: the local cluster's GCS, raylet and workers are started from here."""
    found = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                remote = conn.raddr.ip if conn.raddr else ""
                found.append((proc.name(), conn.laddr.ip, remote))
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_two_collectors_train_with_fresh_weights_and_resume(cluster, tmp_path, monkeypatch):
    from zerokv.rl import distributed, train

    receive, sockets = distributed.CollectorPool._receive, []

    def receive_and_look_at_the_sockets(pool, ref):
        if not sockets:  # mid-run: the GCS, raylet and both collectors are up
            sockets.extend(sockets_of_this_process_tree())
        return receive(pool, ref)

    monkeypatch.setattr(distributed.CollectorPool, "_receive", receive_and_look_at_the_sockets)
    result = train(tiny(tmp_path / "d"))
    names = {name for name, _, _ in sockets}
    assert "gcs_server" in names and "raylet" in names and any("RayCollector" in n for n in names), names
    outward = [s for s in sockets if not raycluster.is_loopback(s[1]) or (s[2] and not raycluster.is_loopback(s[2]))]
    assert not outward, outward
    assert result.env_steps == 64 and len(result.eval_returns) == 1
    stats = result.cache_stats
    assert stats["fallbacks"] == 0 and stats["misses"] == 0 and stats["hits"] > 0
    rows = progress(tmp_path / "d")
    assert [int(r["env_steps"]) for r in rows] == list(range(8, 65, 8))
    versions = [int(r["weights/version"]) for r in rows]
    assert versions == sorted(versions) and versions[-1] > 0  # published as the learner trains
    lags = [float(r["policy_lag"]) for r in rows if r["policy_lag"]]
    assert lags and min(lags) >= 0 and max(lags) > 0  # collectors ran ahead of the learner
    for i in (0, 1):
        assert any(float(r[f"speed/collector_{i}_env_steps_per_s"] or 0) > 0 for r in rows)
    assert float(rows[-1]["speed/env_steps_per_s"]) > 0 and float(rows[-1]["speed/updates_per_s"]) > 0
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "d" / "checkpoints"))
    assert ckpt["collector"] is None and ckpt["counters"]["env_steps"] == 64
    meta = json.loads((tmp_path / "d" / "checkpoints" / "replay_000000064" / "meta.json").read_text())
    assert meta["num_segments"] > 0
    segment_versions = np.load(tmp_path / "d" / "checkpoints" / "replay_000000064" / "segment_weights_version.npy")
    assert segment_versions.max() > 0  # segments collected with published, trained weights
    updates = ckpt["learner"]["updates"]
    resumed = train(tiny(tmp_path / "d", resume=True, total_env_steps=96))
    assert resumed.env_steps == 96 and resumed.cache_stats["fallbacks"] == 0
    rows = progress(tmp_path / "d")
    assert [int(r["env_steps"]) for r in rows][-4:] == [72, 80, 88, 96]
    assert int(rows[-4]["weights/version"]) == updates  # new collectors started from the restored weights


@pytest.mark.slow
def test_a_killed_collector_is_restarted_and_the_run_completes(cluster, tmp_path, monkeypatch):
    from zerokv.rl import distributed, train

    receive = distributed.CollectorPool._receive
    killed: list[int] = []

    def kill_collector_0_once(pool, ref):
        report = receive(pool, ref)
        if report.index == 0 and not killed:  # SIGKILL its process: its queued call dies with it
            killed.append(report.pid)
            os.kill(report.pid, signal.SIGKILL)
        return report

    monkeypatch.setattr(distributed.CollectorPool, "_receive", kill_collector_0_once)
    result = train(tiny(tmp_path / "k", total_env_steps=80))
    assert killed and result.env_steps == 80
    assert result.cache_stats["fallbacks"] == 0
    rows = progress(tmp_path / "k")
    assert int(rows[-1]["collectors/restarts"]) == 1


@pytest.mark.slow
def test_a_silent_collector_fails_the_run_naming_it(cluster, tmp_path):
    from zerokv.rl import train

    # No actor imports torch in 0.01 s: the first wait runs out.
    with pytest.raises(TimeoutError, match=r"zerokv-\w+-collector-\d \(collector \d, not started yet\) sent no result"):
        train(tiny(tmp_path / "t", collector_timeout=0.01))
    ray = raycluster.import_ray()
    assert ray.is_initialized()  # the run did not shut down a cluster it did not start
