"""``zerokv bench``: its flags (`BenchArgs`, parsed by ``zerokv.cli``) and `run`, which runs the benchmark and prints / saves the report."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from zerokv.bench.compile import render_compile, run_compile
from zerokv.bench.configs import (
    DEFAULT_CONFIGS,
    QUICK,
    REFERENCE,
    SOAK_CONFIGS,
    Budget,
    resolve_backends,
    resolve_configs,
    split_names,
)
from zerokv.bench.contexts import parse_contexts, render_contexts, run_contexts, write_contexts_plot
from zerokv.bench.machine import cpu_name
from zerokv.bench.multileaf import parse_leaves, parse_wide_envs, render_multi_leaf, run_multi_leaf
from zerokv.bench.precision import DTYPES, render_precision, run_precision
from zerokv.bench.reanalysis import check_roots, render_reanalysis, run_reanalysis
from zerokv.bench.report import render, write_json, write_plot
from zerokv.bench.run import BenchResult, run_bench
from zerokv.bench.soak import SOAK_BACKENDS, check_searches, render_soak, run_soak
from zerokv.bench.storage import parse_roots, parse_storage_dtypes, render_storage, run_storage
from zerokv.checks import check_positive_int
from zerokv.model.config import CACHE_BACKENDS


@dataclass
class BenchArgs:
    """Run the same MCTS searches with each KV-cache backend and compare them."""

    configs: str | None = None
    """Comma-separated configs to run: small, atari, cartpole (default: small,atari; with --soak: cartpole)."""
    backends: str | None = None
    """Comma-separated cache backends (default: none,legacy,manager,paged; with --soak: legacy,manager,paged);
    "none" is added as the exactness reference when diffing."""
    searches: int | None = None
    """Timed searches per config and backend (default 5; 2 with --quick)."""
    warmup: int | None = None
    """Untimed full-size warm-up searches (default 2; 1 with --quick)."""
    simulations: int | None = None
    """Simulations per search (default: the config's 50; 10 with --quick)."""
    quick: bool = False
    """A smoke run, not a measurement (10 simulations, 1 warm-up, 2 timed searches)."""
    diff: bool = True
    """Compare every output with the "none" backend (max_abs_diff_vs_none)."""
    json: str | None = None
    """Write the results to this JSON file."""
    plot: str | None = None
    """Write a PNG bar chart (simulations/s, cache share, recurrent call / FLOP floor) to this file."""
    threads: int = 2
    """torch.set_num_threads for the whole run."""
    seed: int = 0
    """Seed of the weights, observations and search noise (the same for every backend)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    multi_leaf: str | None = None
    """Also run multi-leaf searches with these leaves per call (e.g. 4,8; paged backend) and compare
    their speed and search policy with the float32 one-leaf search's on the same positions; with
    --precision every leaves-per-call runs in float32 and in bfloat16 (saved under "multi_leaf" in
    the meta JSON)."""
    wide_envs: str | None = None
    """Also run the --multi-leaf table's modes with more envs per call: E (e.g. 16,32: each tree
    searched with the config's simulations, only more trees share a call) or ExS (e.g. 16x25: E envs
    x S simulations, the same expansions per search as 8 x 50), and compare them the same way."""
    precision: bool = False
    """Also search with a bfloat16 copy of the float32 model (paged backend) and report its speed, its
    outputs' difference from the float32 reference and its search-policy change (saved under
    "precision" in the meta JSON); with --multi-leaf, the multi-leaf table covers bfloat16 too."""
    compile: bool = False
    """Also search with the torch.compile'd recurrent step (paged backend, float32) beside the eager one
    and report its speed, compile time, recompiles and difference from the reference (saved under
    "compile" in the meta JSON; see docs/compile.md)."""
    reanalyze: int | None = None
    """Also reanalyse this many replayed positions at once and 8 at a time (the reference's way) and
    report roots/s (paged backend; saved under "reanalysis" in the meta JSON)."""
    storage_dtypes: str | None = None
    """Also compare KV storage dtypes, e.g. float32,bfloat16,float8_e4m3fn,int8 (paged backend, float32
    compute, float32 storage always included as the baseline): arena bytes per node, searches/s, output and
    search-policy change, reanalysis roots/s at --storage-roots, snapshot load vs context rebuild (saved
    under "storage" in the meta JSON)."""
    storage_roots: str = "256,1024,2048"
    """Reanalysis arena sizes (roots per call) measured by --storage-dtypes."""
    contexts: str | None = None
    """Instead of the named configs, the long-context benchmark: UniZero's memory-task model (embed 256,
    4 layers) at these context lengths in tokens (e.g. 16,64,160,320), every env given a real past that
    fills the window before the timed searches; adds per-expansion cost, speed-up over "none" and where
    the time goes (linear layers, attention, other ops, Python); --plot draws cost and memory against
    context length."""
    soak: int | None = None
    """Instead of the comparison, a soak: this many searches per backend (each in a fresh process,
    caches never cleared), RSS sampled along the way, against each store's documented size (see
    zerokv.bench.soak). Uses --configs, --backends, --simulations, --threads, --seed, --json."""


def budget_of(args: BenchArgs) -> Budget:
    base = QUICK if args.quick else Budget()
    return Budget(
        searches=base.searches if args.searches is None else args.searches,
        warmup=base.warmup if args.warmup is None else args.warmup,
        simulations=base.simulations if args.simulations is None else args.simulations,
    )


def run(args: BenchArgs) -> BenchResult:
    """Validate ``args`` (ValueError naming the bad value and what is allowed), run, report."""
    check_positive_int("threads", args.threads)
    if args.soak is not None:
        return run_soak_command(args)
    if args.contexts is not None:
        return run_contexts_command(args)
    configs = resolve_configs(args.configs or DEFAULT_CONFIGS)
    names = args.backends or ",".join(CACHE_BACKENDS)
    backends = resolve_backends(names, with_reference=args.diff)
    budget = budget_of(args)
    leaves = None if args.multi_leaf is None else parse_leaves(args.multi_leaf)
    wide = [] if args.wide_envs is None else parse_wide_envs(args.wide_envs)
    if wide and leaves is None:
        leaves = []  # --wide-envs alone: the one-leaf search at each width
    roots = None if args.reanalyze is None else check_roots(args.reanalyze)
    storage = None if args.storage_dtypes is None else parse_storage_dtypes(args.storage_dtypes)
    storage_roots = parse_roots(args.storage_roots)
    print(f"zerokv bench: configs={','.join(configs)} backends={','.join(backends)} "
          f"searches={budget.searches} warmup={budget.warmup} "
          f"simulations={budget.simulations or 'config'} threads={args.threads} seed={args.seed}"
          f"{' QUICK' if args.quick else ''}", flush=True)
    result = run_bench(configs, backends, budget, seed=args.seed, diff=args.diff,
                       threads=args.threads, quick=args.quick, progress=args.progress)
    if args.diff and REFERENCE not in split_names(names):
        result.meta["notes"].append(f"{REFERENCE!r} was added to --backends as the exactness reference")
    print(render(result), flush=True)
    if leaves is not None:
        dtypes = DTYPES if args.precision else DTYPES[:1]
        result.meta["multi_leaf"] = run_multi_leaf(configs, leaves, budget, seed=args.seed, dtypes=dtypes,
                                                   wide_envs=wide)
        print("\n" + render_multi_leaf(result.meta["multi_leaf"]), flush=True)
    if args.precision:
        result.meta["precision"] = run_precision(configs, budget, seed=args.seed)
        print("\n" + render_precision(result.meta["precision"]), flush=True)
    if args.compile:
        result.meta["compile"] = run_compile(configs, budget, seed=args.seed)
        print("\n" + render_compile(result.meta["compile"]), flush=True)
    if roots is not None:
        result.meta["reanalysis"] = run_reanalysis(configs, roots, budget, seed=args.seed)
        print("\n" + render_reanalysis(result.meta["reanalysis"]), flush=True)
    if storage is not None:
        result.meta["storage"] = run_storage(configs, budget, dtypes=storage, roots=storage_roots, seed=args.seed)
        print("\n" + render_storage(result.meta["storage"]), flush=True)
    return write_outputs(result, args, write_plot)


def run_contexts_command(args: BenchArgs) -> BenchResult:
    """``--contexts L1,L2,…``: the long-context benchmark alone (see :mod:`zerokv.bench.contexts`)."""
    others = [flag for flag, on in (("--configs", args.configs is not None), ("--multi-leaf", args.multi_leaf is not None),
                                    ("--wide-envs", args.wide_envs is not None), ("--precision", args.precision),
                                    ("--reanalyze", args.reanalyze is not None),
                                    ("--storage-dtypes", args.storage_dtypes is not None)) if on]
    if others:
        raise ValueError(f"--contexts runs its own configs alone; drop {', '.join(others)}")
    contexts = parse_contexts(args.contexts)
    names = args.backends or ",".join(CACHE_BACKENDS)
    backends = resolve_backends(names, with_reference=args.diff)
    budget = budget_of(args)
    print(f"zerokv bench --contexts {','.join(map(str, contexts))}: backends={','.join(backends)} "
          f"searches={budget.searches} warmup={budget.warmup} simulations={budget.simulations or 'config'} "
          f"threads={args.threads} seed={args.seed}{' QUICK' if args.quick else ''}", flush=True)
    result = run_contexts(contexts, backends, budget, seed=args.seed, diff=args.diff, threads=args.threads,
                          progress=args.progress)
    result.meta["quick"] = args.quick
    print(render(result), flush=True)
    print("\n" + render_contexts(result), flush=True)
    return write_outputs(result, args, write_contexts_plot)


def run_soak_command(args: BenchArgs) -> BenchResult:
    """``--soak N``: the soak alone (see :mod:`zerokv.bench.soak`); its records and meta as a BenchResult."""
    others = [flag for flag, on in (("--multi-leaf", args.multi_leaf is not None),
                                    ("--wide-envs", args.wide_envs is not None), ("--precision", args.precision),
                                    ("--compile", args.compile),
                                    ("--reanalyze", args.reanalyze is not None), ("--plot", args.plot is not None),
                                    ("--storage-dtypes", args.storage_dtypes is not None),
                                    ("--contexts", args.contexts is not None), ("--quick", args.quick)) if on]
    if others:
        raise ValueError(f"--soak runs alone; drop {', '.join(others)}")
    check_searches(args.soak)
    configs = resolve_configs(args.configs or SOAK_CONFIGS)
    backends = resolve_backends(args.backends or ",".join(SOAK_BACKENDS), with_reference=False)
    if args.simulations is not None:
        check_positive_int("simulations", args.simulations)
        configs = {n: dataclasses.replace(c, num_simulations=args.simulations) for n, c in configs.items()}
    print(f"zerokv bench --soak {args.soak}: configs={','.join(configs)} backends={','.join(backends)} "
          f"threads={args.threads} seed={args.seed}, each backend in a fresh process", flush=True)
    records = run_soak(configs, backends, args.soak, seed=args.seed, threads=args.threads, progress=args.progress)
    print(render_soak(records), flush=True)
    result = BenchResult(records, {
        "soak": args.soak, "seed": args.seed, "threads": args.threads, "backends": backends,
        "configs": list(configs), "cpu": cpu_name(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    })
    return write_outputs(result, args)


def write_outputs(result: BenchResult, args: BenchArgs, plot=None) -> BenchResult:
    """Write ``--json`` (and ``--plot`` with ``plot(result, path)``, where the mode has one); say where."""
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot and plot is not None:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return result
