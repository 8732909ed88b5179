"""``zerokv bench --multi-leaf K,...``: what each way of putting more rows (or fewer bytes) into a
weight read buys, and what it does to the search policy.

A float32 one-leaf call at the `atari` config streams its weights once for 8 rows, and on this
CPU that read bounds the call. Three levers change the bytes per row: more leaves per env in each
call (``leaves_per_call`` K), fewer bytes per weight (a bfloat16 copy of the model, with
``--precision``), and more envs per call (``--wide-envs E``: E envs, each searched with the
config's simulations — every tree's search unchanged, only more of them share a call; or
``--wide-envs ExS``: E envs × S simulations, e.g. 16x25 for the same expansions per search as 8 ×
50). Every combination (a
:class:`SearchMode`) searches the same fixed positions — fresh roots, the same weights and the
same root noise per position — with the `paged` backend, interleaved group by group in an order
that rotates by one per group, so drift of a shared machine hits every mode alike.

Reported per mode: searches/s (one search = its envs × simulations expansions), the speed-up in
expansions/s over float32 one-leaf (the speed-up at equal work: every expansion is one node's
model row), env steps/s (positions decided per second), calls per search and rows per call, and
how far the search policy moved from the float32 one-leaf search on the same positions: mean KL(baseline ‖ mode) of the visit distributions, total
variation and top-action agreement. The float32 one-leaf search under *another* root-noise draw
gives the scale (``KL / noise``): a change well below it is below the search's own variation.

Root noise is drawn per position (``position_noise``), not per batch, so a 16-env search sees at
each position exactly the noise the 8-env searches see there; it enters as the mixed root prior
(:func:`search_with_noise`), which is what ``muzero_search`` itself would form.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from zerokv.bench.configs import Budget, model_config
from zerokv.bench.machine import CpuWatch
from zerokv.bench.report import table
from zerokv.bench.run import rotated
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.search import SearchConfig
from zerokv.search.mcts import RootFnOutput, muzero_search
from zerokv.search.plan import model_recurrent_fn
from zerokv.search.tree import legal_dirichlet, softmax

SMOOTHING = 0.5
"""Visit counts are smoothed by this many pseudo-visits per legal action before the KL, so an
action one search never tried does not make the divergence infinite."""
BASELINE_DTYPE = "float32"
"""The exact search every speed-up and policy change is measured against (with K = 1)."""
NOISE_SEED, OTHER_NOISE_SEED = 1000, 5000
"""Offsets (from the bench seed) of the root noise every mode shares and of the noise reference's."""


def parse_leaves(text: str) -> list[int]:
    """"4,8" → [4, 8]; each an int >= 2 (1 is the baseline, always run)."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 2:
            raise ValueError(f"--multi-leaf value {part!r}; each must be an int >= 2 (1, the baseline, always runs)")
        values.append(int(part))
    if not values:
        raise ValueError(f"--multi-leaf {text!r} selects nothing; give e.g. 4,8")
    return sorted(set(values))


def parse_wide_envs(text: str) -> list[tuple[int, int | None]]:
    """"16,32x25" → [(16, None), (32, 25)]: envs per call, each with the config's simulations
    per tree (None) or the given number."""
    values = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        envs, _, sims = part.partition("x")
        if not envs.isdigit() or int(envs) < 2 or (sims and (not sims.isdigit() or int(sims) < 1)):
            raise ValueError(f"--wide-envs value {part!r}; each must be E (envs per call, an int >= 2, at the "
                             "config's simulations) or ExS (E envs x S simulations, e.g. 16x25)")
        values.append((int(envs), int(sims) if sims else None))
    if not values:
        raise ValueError(f"--wide-envs {text!r} selects nothing; give e.g. 16 or 16x25")
    return sorted(set(values), key=lambda v: (v[0], v[1] or 0))


def policy_distance(base: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Mean KL(base ‖ other) (smoothed), total variation and top-action agreement of visit
    counts ``[P, A]`` searched on the same P positions (their totals may differ)."""
    p = (base + SMOOTHING) / (base + SMOOTHING).sum(axis=1, keepdims=True)
    q = (other + SMOOTHING) / (other + SMOOTHING).sum(axis=1, keepdims=True)
    kl = (p * np.log(p / q)).sum(axis=1)
    tv = 0.5 * np.abs(base / base.sum(1, keepdims=True) - other / other.sum(1, keepdims=True)).sum(axis=1)
    return {"kl": float(kl.mean()), "tv": float(tv.mean()),
            "top_action_agrees": float((base.argmax(1) == other.argmax(1)).mean())}


@dataclass(frozen=True, slots=True)
class SearchMode:
    """One way to search: model dtype × leaves per call × envs per call (at equal expansions)."""

    dtype: str  # "float32" or "bfloat16" (a copy of the float32 weights)
    leaves_per_call: int  # K
    env_num: int  # envs (trees) per search and rows per call at K = 1
    num_simulations: int  # per tree
    other_noise: bool = False  # the noise reference: another root-noise draw at every position

    @property
    def label(self) -> str:
        return (f"{self.dtype} K={self.leaves_per_call} {self.env_num}×{self.num_simulations}"
                + (", other noise" if self.other_noise else ""))


def search_modes(cfg: WorldModelConfig, leaves: Sequence[int], dtypes: Sequence[str],
                 wide_envs: Sequence[tuple[int, int | None]]) -> list[SearchMode]:
    """Every (envs × sims, dtype, K) combination, the float32 one-leaf baseline first and the noise
    reference last. A width (E, None) searches E envs at the config's simulations per tree."""
    widths = [(cfg.env_num, cfg.num_simulations)]
    for envs, sims in wide_envs:
        width = (envs, sims or cfg.num_simulations)
        if width not in widths:
            widths.append(width)
    dtypes = [BASELINE_DTYPE, *(d for d in dtypes if d != BASELINE_DTYPE)]
    modes = [SearchMode(d, k, e, s) for e, s in widths for d in dtypes for k in (1, *leaves)]
    return [*modes, SearchMode(BASELINE_DTYPE, 1, cfg.env_num, cfg.num_simulations, other_noise=True)]


def position_noise(seed: int, positions: int, num_actions: int, alpha: float) -> np.ndarray:
    """Root noise [P, A], one Dirichlet(alpha) draw per position from its own stream, so it does
    not depend on how positions are batched into searches."""
    legal = np.ones((1, num_actions), dtype=bool)
    return np.concatenate([legal_dirichlet(np.random.default_rng([seed, p]), alpha, legal) for p in range(positions)])


def search_with_noise(wm: WorldModel, obs: np.ndarray, search: SearchConfig, noise: np.ndarray):
    """A search from fresh roots [B, *obs] whose root prior mixes in the given noise [B, A]
    (``(1 − f)·prior + f·noise``, as ``muzero_search`` does with its own draw); its SearchOutput."""
    wm.clear_caches()  # a fixed position: no history, the same for every mode
    roots = wm.initial_inference(obs)
    f = search.exploration_fraction
    prior = (1.0 - f) * softmax(roots.policy_logits.cpu().numpy()) + f * noise  # [B, A], float64
    root = RootFnOutput(value=roots.value.cpu().numpy(), policy_logits=np.log(prior), latent=roots.latent_state)
    return muzero_search(root, model_recurrent_fn(wm), search, rng=np.random.default_rng(0), add_noise=False,
                         temperature=1.0)


@dataclass(slots=True)
class _ModeRun:
    """One mode's model, its samples and its visit counts (filled position by position)."""

    mode: SearchMode
    model: WorldModel
    search: SearchConfig
    visits: np.ndarray  # [P, A] root visit counts per position
    seconds: list[float] = field(default_factory=list)  # per timed search
    calls: list[int] = field(default_factory=list)  # per timed search

    def run(self, obs: np.ndarray, noise: np.ndarray, first: int, *, timed: bool) -> None:
        """Search positions ``first … first + len(obs) - 1`` (one search of env_num positions)."""
        t0 = time.perf_counter()
        out = search_with_noise(self.model, obs, self.search, noise)
        if timed:
            self.seconds.append(time.perf_counter() - t0)
            self.calls.append(out.model_calls)
            self.visits[first:first + len(obs)] = out.visit_counts


def _models(fp32: WorldModel, modes: Sequence[SearchMode]) -> dict[tuple[str, int, int], WorldModel]:
    """One model per (dtype, envs, simulations), all with ``fp32``'s weights (cast)."""
    models: dict[tuple[str, int, int], WorldModel] = {}
    for m in modes:
        key = (m.dtype, m.env_num, m.num_simulations)
        if key not in models:
            same = key == (fp32.config.dtype, fp32.config.env_num, fp32.config.num_simulations)
            models[key] = fp32 if same else fp32.copy_with(dtype=m.dtype, env_num=m.env_num,
                                                           num_simulations=m.num_simulations)
    return models


def run_modes_config(name: str, base: WorldModelConfig, modes_of, budget: Budget, *, seed: int = 0) -> list[dict]:
    """Every mode ``modes_of(cfg)`` returns, on one config; one record per mode."""
    cfg = model_config(base, "paged", budget)
    modes = modes_of(cfg)
    torch.manual_seed(seed)  # the bench's weights
    models = _models(WorldModel(cfg).eval(), modes)
    group = math.lcm(*(m.env_num for m in modes))  # positions per interleaving step
    groups = math.ceil(budget.searches * cfg.env_num / group)
    total = (budget.warmup + groups) * group
    rng = np.random.default_rng(seed + 7)
    positions = rng.random((total, *cfg.observation_shape), dtype=np.float32)  # [P, *obs]
    search = SearchConfig(num_simulations=cfg.num_simulations)
    noise = {flag: position_noise(seed + offset, total, cfg.action_space_size, search.dirichlet_alpha)
             for flag, offset in ((False, NOISE_SEED), (True, OTHER_NOISE_SEED))}
    runs = [_ModeRun(m, models[(m.dtype, m.env_num, m.num_simulations)],
                     SearchConfig(num_simulations=m.num_simulations, leaves_per_call=m.leaves_per_call),
                     np.zeros((total, cfg.action_space_size), dtype=np.int64)) for m in modes]
    watch = CpuWatch()
    for g in range(budget.warmup + groups):
        timed = g >= budget.warmup
        for run in rotated(runs, g):
            for first in range(g * group, (g + 1) * group, run.mode.env_num):
                last = first + run.mode.env_num
                run.run(positions[first:last], noise[run.mode.other_noise][first:last], first, timed=timed)
    skip = budget.warmup * group  # the warm-up groups' rows stay zero: leave them out
    others = watch.others_share()
    return [{**rec, "other_processes_cpu_share": others} for rec in _records(name, runs, skip)]


def _records(name: str, runs: Sequence[_ModeRun], skip: int) -> list[dict]:
    base, noise = runs[0], runs[-1]
    baseline = base.visits[skip:]
    base_rate = statistics.median(1.0 / s for s in base.seconds) * base.mode.env_num * base.mode.num_simulations
    noise_kl = policy_distance(baseline, noise.visits[skip:])["kl"]
    records = []
    for run in runs:
        m = run.mode
        speed = float(statistics.median(1.0 / s for s in run.seconds))
        expansions = m.env_num * m.num_simulations
        change = policy_distance(baseline, run.visits[skip:])
        records.append({
            "config": name, "label": m.label, "dtype": m.dtype, "leaves_per_call": m.leaves_per_call,
            "env_num": m.env_num, "num_simulations": m.num_simulations, "other_noise": m.other_noise,
            "searches_per_s": speed, "expansions_per_s": expansions * speed,
            "speedup": expansions * speed / base_rate, "env_steps_per_s": m.env_num * speed,
            "calls_per_search": float(statistics.mean(run.calls)),
            "rows_per_call": expansions / float(statistics.mean(run.calls)),
            "timed_searches": len(run.seconds), "positions": int(baseline.shape[0]),
            **change, "kl_vs_noise": change["kl"] / noise_kl if noise_kl > 0 else math.nan,
            "expansions_per_search": expansions,
        })
    return records


def run_multi_leaf(
    configs: Mapping[str, WorldModelConfig], leaves: Sequence[int], budget: Budget, *, seed: int = 0,
    dtypes: Sequence[str] = (BASELINE_DTYPE,), wide_envs: Sequence[int] = (),
) -> list[dict]:
    """One record per (config, mode): the float32 one-leaf baseline first, then every (envs,
    dtype, K) combination (:func:`search_modes`), then the one-leaf noise reference."""
    records = []
    for name, base in configs.items():
        records += run_modes_config(name, base, lambda cfg: search_modes(cfg, leaves, dtypes, wide_envs), budget,
                                    seed=seed)
    return records


def render_multi_leaf(records: list[dict]) -> str:
    header = ["config", "dtype", "envs×sims", "leaves/call", "searches/s", "×", "env steps/s", "calls/search",
              "rows/call", "KL(base‖·)", "KL/noise", "TV", "top action ="]
    rows = [[r["config"], r["dtype"], f"{r['env_num']}×{r['num_simulations']}",
             f"{r['leaves_per_call']}{', other noise' if r['other_noise'] else ''}", f"{r['searches_per_s']:.2f}",
             f"{r['speedup']:.2f}×", f"{r['env_steps_per_s']:.1f}", f"{r['calls_per_search']:.1f}",
             f"{r['rows_per_call']:.1f}", f"{r['kl']:.4f}", f"{r['kl_vs_noise']:.2f}", f"{r['tv']:.3f}",
             f"{100 * r['top_action_agrees']:.0f}%"] for r in records]
    n = records[0]["positions"] if records else 0
    busy = "; ".join(f"{c}: {100 * s:.0f}%" for c, s in {r["config"]: r["other_processes_cpu_share"]
                                                       for r in records}.items())
    return (f"Search modes (paged backend, {n} fixed positions per config, the same weights and root noise per "
            "position; medians over interleaved searches; × and the policy change against float32 one-leaf):\n"
            + table(header, rows)
            + f"\nnote: a search is envs × sims expansions; × is the speed-up in expansions/s (at equal work: one "
            f"model row per expansion); env steps/s = envs × searches/s; KL over visit counts smoothed by {SMOOTHING} per action; "
            "KL/noise = KL ÷ the 'other noise' row's KL, the one-leaf search under another root-noise draw (the "
            f"search's own variation)\nnote: other processes' share of the CPU during the run: {busy}")
