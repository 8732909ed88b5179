"""Runs every command and Python snippet of README.md, in the README's order, as a new user would
on a fresh clone, and checks what each one should leave behind (exit code, files, printed lines,
env steps). CI runs it after the test suite (`.ci/run`): `.venv/bin/python scripts/readme_commands.py`.

The commands are read from README.md's ```bash and ```python blocks, so the README cannot drift
from what runs here: a README command missing from PLAN below, or a PLAN entry no longer in the
README, fails the script. Each PLAN entry says how the command runs and why it differs from the
README line, if it does (a smaller budget; never another behaviour). Shrunk here:

* `bash scripts/run.sh` (the main job; a few minutes on a quiet 2-core CPU) and the first
  `zerokv train` (the same run into runs/cartpole): --total-env-steps 1024 --eval-episodes 3
  instead of 30,000 steps or an evaluation reaching 475, and the second one is stopped by SIGINT
  (Ctrl-C) once it has logged 512 env steps (after its first updates); the resume without flags then finishes it.
* the resume with --total-env-steps 60000: 1280 instead (256 more steps, not 59,000).
* `zerokv train --preset atari`: --total-env-steps 64 --eval-episodes 1 --eval-max-steps 16
  (100,000 steps and three full Pong games otherwise), into runs/pong.
* `pip install .`: into a fresh venv that reuses .venv's dependencies (--no-deps --no-index
  --no-build-isolation: no download of torch and the rest).
* `bash scripts/test.sh` (with or without `-m "not slow"`): not run here; `.ci/run` runs the whole
  suite just before this script.

Commands run in a scratch directory (runs/, videos/, exported/ land there), with .venv/bin
first on PATH; `bash scripts/...` and `.venv/...` refer to this clone. `--keep DIR` keeps the
scratch directory at DIR. `--threads N`, for a shared machine (CI passes none: the commands run as
written), appends `--threads N` to the commands that take it, except the resumes (they keep the
saved value), and sets OMP_NUM_THREADS=N for the Python snippets.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
STEPS, RESUMED_STEPS, INTERRUPT_AT = 1024, 1280, 512  # updates start at 512 (min_replay_steps 400)
SMALL_RUN = ("--total-env-steps", str(STEPS), "--eval-episodes", "3")


class CheckFailed(AssertionError):
    """A README command did not do what the README says."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


@dataclass(frozen=True)
class Snippet:
    """One README command (a ```bash line without its comment) or one ```python block."""

    kind: str  # "bash" | "python"
    text: str
    line: int  # where it starts in README.md


@dataclass
class Run:
    """What running a snippet gave."""

    returncode: int
    out: str  # stdout and stderr, interleaved
    seconds: float


@dataclass
class Rule:
    """How PLAN runs one README snippet: the argv changes (documented in the module docstring),
    or a reason to skip it, and the check of its result."""

    extra: tuple[str, ...] = ()
    replace: dict[str, str] = field(default_factory=dict)
    skip: str | None = None
    runner: Callable[[Snippet, list[str], Path], Run] | None = None
    check: Callable[[Run, Path], None] | None = None


def snippets(readme: str) -> list[Snippet]:
    """The ```bash lines (comments and blank lines dropped) and ```python blocks, in order."""
    found = []
    for m in re.finditer(r"^```(bash|python)\n(.*?)^```", readme, flags=re.S | re.M):
        first = readme[:m.start()].count("\n") + 2
        if m.group(1) == "python":
            found.append(Snippet("python", m.group(2), first))
            continue
        for i, line in enumerate(m.group(2).splitlines()):
            command = shlex.join(shlex.split(line, comments=True))
            if command:
                found.append(Snippet("bash", command, first + i))
    return found


THREADS: list[str] = []  # ["--threads", "N"] with --threads N (see the module docstring)
TAKES_THREADS = ("bash scripts/run.sh", "zerokv train --env", "zerokv train --preset", "zerokv eval", "zerokv enjoy",
                 "zerokv bench")


def env_with_venv(bin_dir: Path = VENV_BIN) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    if THREADS:
        env["OMP_NUM_THREADS"] = THREADS[1]
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env or env_with_venv(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    return Run(proc.returncode, proc.stdout, time.monotonic() - start)


def argv_of(snippet: Snippet, rule: Rule) -> list[str]:
    text = snippet.text
    for old, new in rule.replace.items():
        check(old in text, f"README line {snippet.line}: expected {old!r} in {text!r}")
        text = text.replace(old, new)
    argv = shlex.split(text) + list(rule.extra) + (THREADS if text.startswith(TAKES_THREADS) else [])
    if argv[:2] == ["bash", argv[1]] and argv[1].startswith("scripts/"):
        argv[1] = str(ROOT / argv[1])
    if argv[0].startswith(".venv/"):
        argv[0] = str(ROOT / argv[0])
    return argv


# --- the install block: a fresh venv of its own ---------------------------------------------------

def fresh_venv(work: Path) -> Path:
    """A new venv whose site-packages also see .venv's (torch & co.), zerokv not installed."""
    target = work / "fresh-venv"
    if not target.exists():
        venv.create(target, with_pip=False)
        purelib = subprocess.run([str(target / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        ours = subprocess.run([str(VENV_BIN / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        (Path(purelib) / "reuse_deps.pth").write_text(ours + "\n")
    return target


def pip_install(snippet: Snippet, argv: list[str], work: Path) -> Run:
    target = fresh_venv(work)
    check(argv[:2] == ["pip", "install"], f"README line {snippet.line}: {snippet.text!r} is not a pip install")
    return run([str(VENV_BIN / "pip"), "--python", str(target / "bin" / "python"), *argv[1:],
                "--no-deps", "--no-index", "--no-build-isolation", "-q"], cwd=ROOT)


def in_fresh_venv(snippet: Snippet, argv: list[str], work: Path) -> Run:
    return run(argv, cwd=work, env=env_with_venv(fresh_venv(work) / "bin"))


def check_version(result: Run, work: Path) -> None:
    version = run([str(VENV_BIN / "python"), "-c", "import zerokv; print(zerokv.__version__)"], cwd=work).out.strip()
    check(result.out.strip() == f"zerokv {version}", f"expected 'zerokv {version}', got {result.out.strip()!r}")
    where = subprocess.run([str(fresh_venv(work) / "bin" / "python"), "-c", "import zerokv; print(zerokv.__file__)"],
                           capture_output=True, text=True, cwd=work).stdout
    check(str(ROOT / "zerokv") not in where and "fresh-venv" in where, f"zerokv not installed into the venv: {where}")


# --- training, Ctrl-C, resume ---------------------------------------------------------------------

def progress_steps(run_dir: Path) -> list[int]:
    path = run_dir / "progress.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(row["env_steps"]) for row in csv.DictReader(f)]


def train_then_ctrl_c(snippet: Snippet, argv: list[str], work: Path) -> Run:
    """Starts the run, sends SIGINT (what Ctrl-C sends) once progress.csv has INTERRUPT_AT env
    steps, and waits for the checkpoint-and-exit."""
    out_dir = work / argv[argv.index("--out") + 1]
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=work, env=env_with_venv(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None and max(progress_steps(out_dir), default=0) < INTERRUPT_AT:
        time.sleep(0.2)
    interrupted = proc.poll() is None
    if interrupted:
        proc.send_signal(signal.SIGINT)
    out = proc.communicate()[0]
    check(interrupted, f"the run ended (exit {proc.returncode}) before it logged {INTERRUPT_AT} env steps:\n{out}")
    return Run(proc.returncode, out, time.monotonic() - start)


def check_interrupted(result: Run, work: Path) -> None:
    check(result.returncode == 128 + signal.SIGINT, f"exit {result.returncode} after SIGINT, expected 130")
    m = re.search(r"stopped by SIGINT at (\d+) env steps", result.out)
    check(m is not None, "no 'stopped by SIGINT at N env steps' line")
    steps = int(m.group(1))
    check(INTERRUPT_AT <= steps < STEPS, f"stopped at {steps} env steps, expected in [{INTERRUPT_AT}, {STEPS})")
    check((work / "runs/cartpole/checkpoints" / f"ckpt_{steps:09d}.pt").is_file(), f"no ckpt_{steps:09d}.pt after SIGINT")
    STATE["interrupted_at"] = steps
    STATE["config"] = json.loads((work / "runs/cartpole/config.json").read_text())


def check_resumed(result: Run, work: Path) -> None:
    run_dir = work / "runs/cartpole"
    at = STATE["interrupted_at"]
    check(result.returncode == 0, f"exit {result.returncode}")
    check(f"ckpt_{at:09d}.pt at {at} env steps" in result.out, f"did not resume from ckpt_{at:09d}.pt at {at} env steps")
    check("changed from" not in result.out, "a resume without flags changed the config")
    saved, now = STATE["config"], json.loads((run_dir / "config.json").read_text())
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    check(not changed, f"config.json changed on a resume without flags: {changed}")
    steps = progress_steps(run_dir)
    check(steps == sorted(set(steps)) and steps[-1] == STEPS and at in steps,
          f"progress.csv env steps {steps}: expected increasing, through {at}, ending at {STEPS}")
    check((run_dir / "best.pt").is_file(), "no best.pt after the final evaluation")


def check_resumed_with_flag(result: Run, work: Path) -> None:
    run_dir = work / "runs/cartpole"
    check(result.returncode == 0, f"exit {result.returncode}")
    check(f"--resume: total_env_steps changed from {STEPS} to {RESUMED_STEPS}" in result.out,
          "the changed --total-env-steps was not printed")
    check(f"at {STEPS} env steps" in result.out, f"did not resume at {STEPS} env steps")
    check(json.loads((run_dir / "config.json").read_text())["total_env_steps"] == RESUMED_STEPS,
          "config.json does not hold the new total_env_steps")
    check(progress_steps(run_dir)[-1] == RESUMED_STEPS, f"progress.csv does not end at {RESUMED_STEPS}")


def check_main_job(result: Run, work: Path) -> None:
    check(result.returncode == 0, f"exit {result.returncode}")
    m = re.search(r"config \(saved in (\S+)/config\.json\)", result.out)
    check(m is not None, "scripts/run.sh printed no run directory")
    run_dir = ROOT / m.group(1)
    check(progress_steps(run_dir)[-1:] == [STEPS], f"{run_dir}/progress.csv does not end at {STEPS} env steps")
    check(any((run_dir / "checkpoints").glob("ckpt_*.pt")), "no checkpoint")
    check("cache" in result.out and "hits" in result.out, "no cache statistics printed")
    shutil.rmtree(run_dir)  # it is in the clone's runs/, not the scratch directory


# --- the other commands ---------------------------------------------------------------------------

def ok(*needles: str, files: tuple[str, ...] = ()) -> Callable[[Run, Path], None]:
    """Exit 0, each needle printed, each file (a glob under the scratch directory) present."""
    def check_it(result: Run, work: Path) -> None:
        check(result.returncode == 0, f"exit {result.returncode}")
        for needle in needles:
            check(needle in result.out, f"{needle!r} not printed")
        for pattern in files:
            check(any(p.stat().st_size > 0 for p in work.glob(pattern)), f"no {pattern}")
    return check_it


def check_videos(result: Run, work: Path) -> None:
    check(result.returncode == 0, f"exit {result.returncode}")
    if video_deps():
        check(len(list((work / "videos").glob("*.mp4"))) == 3, "expected 3 videos in videos/")


def video_deps() -> bool:
    return importlib.util.find_spec("moviepy") is not None


def enjoy(snippet: Snippet, argv: list[str], work: Path) -> Run:
    """With zerokv[video] as written; without it, the same episodes rendered to frames."""
    if not video_deps():
        i = argv.index("--video")
        argv = argv[:i] + argv[i + 2:] + ["--render", "rgb_array"]
    return run(argv, cwd=work)


def check_export(result: Run, work: Path) -> None:
    ok(files=("exported/cartpole/model.safetensors", "exported/cartpole/config.json",
              "exported/cartpole/README.md"))(result, work)
    loaded = run([str(VENV_BIN / "python"), "-c", LOAD_EXPORT], cwd=work)
    check(loaded.returncode == 0 and "export acts" in loaded.out, f"loading the export failed:\n{loaded.out}")


LOAD_EXPORT = """
import numpy as np, zerokv
agent = zerokv.Agent.load("exported/cartpole")
obs, _ = agent.make_env().reset(seed=0)
action = agent.predict(obs)
assert isinstance(action, int) and action in (0, 1), action
print("export acts", action)
"""

AGENT_CHECK = """
assert done and isinstance(reward, float), (done, reward)
print("agent played an episode")
"""


def python_block(snippet: Snippet, argv: list[str], work: Path, suffix: str = "") -> Run:
    return run([str(VENV_BIN / "python"), "-c", snippet.text + suffix], cwd=work)


def with_suffix(suffix: str) -> Callable[[Snippet, list[str], Path], Run]:
    return lambda snippet, argv, work: python_block(snippet, argv, work, suffix)


# README command (or a line that identifies a ```python block) -> how it runs here.
PLAN: dict[str, Rule] = {
    "bash scripts/run.sh": Rule(extra=SMALL_RUN, check=check_main_job),
    "bash scripts/test.sh": Rule(skip=".ci/run runs it just before this script"),
    "pip install .": Rule(runner=pip_install, check=ok()),
    "zerokv --version": Rule(runner=in_fresh_venv, check=check_version),
    "cfg = zerokv.WorldModelConfig(": Rule(runner=python_block, check=ok("hits=")),
    "zerokv train --env CartPole-v1 --out runs/cartpole": Rule(extra=SMALL_RUN, runner=train_then_ctrl_c,
                                                               check=check_interrupted),
    "zerokv train --out runs/cartpole --resume": Rule(check=check_resumed),
    "zerokv train --out runs/cartpole --resume --total-env-steps 60000": Rule(
        replace={"60000": str(RESUMED_STEPS)}, check=check_resumed_with_flag),
    "zerokv eval --checkpoint runs/cartpole/best.pt --episodes 10": Rule(check=ok("±")),
    "zerokv plot runs/cartpole": Rule(check=ok(files=("runs/cartpole/curve.png",))),
    "zerokv enjoy --checkpoint runs/cartpole/best.pt --episodes 3 --video videos/": Rule(runner=enjoy,
                                                                                       check=check_videos),
    "zerokv export --checkpoint runs/cartpole/best.pt --out exported/cartpole": Rule(check=check_export),
    "zerokv train --preset atari": Rule(
        extra=("--out", "runs/pong", "--total-env-steps", "64", "--eval-episodes", "1", "--eval-max-steps", "16"),
        check=ok("without a weight update", files=("runs/pong/checkpoints/ckpt_*.pt",))),
    "zerokv bench --quick": Rule(check=ok("paged")),
    "agent = zerokv.Agent.load(\"runs/cartpole\")": Rule(runner=with_suffix(AGENT_CHECK),
                                                          check=ok("agent played an episode")),
    "bash scripts/test.sh -m 'not slow' -n auto": Rule(skip=".ci/run runs the whole suite just before this script"),
}
STATE: dict[str, object] = {}  # what one step leaves for the next: where the run stopped, its config


def rule_for(snippet: Snippet) -> tuple[str, Rule]:
    if snippet.kind == "bash":
        if snippet.text in PLAN:
            return snippet.text, PLAN[snippet.text]
    else:
        keys = [k for k in PLAN if k in snippet.text]
        if len(keys) == 1:
            return keys[0], PLAN[keys[0]]
    raise CheckFailed(f"README.md line {snippet.line}: {snippet.text.splitlines()[0]!r} is not in "
                      "scripts/readme_commands.py's PLAN: add how CI runs it and what it must leave behind")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="scratch directory to use and keep (must not exist)")
    parser.add_argument("--start-at", type=int, default=0, help="skip the README snippets above this line "
                        "(with --keep, to rerun from a failed step)")
    parser.add_argument("--threads", type=int, help="append --threads N where a command takes it (shared machines)")
    args = parser.parse_args()
    if args.threads is not None:
        THREADS[:] = ["--threads", str(args.threads)]
    found = snippets((ROOT / "README.md").read_text())
    used = {rule_for(s)[0] for s in found}
    stale = sorted(set(PLAN) - used)
    check(not stale, f"PLAN entries no longer in README.md: {stale}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="zerokv-readme-"))
    work.mkdir(parents=True, exist_ok=args.keep is None or args.start_at > 0)
    total = time.monotonic()
    try:
        for snippet in found:
            key, rule = rule_for(snippet)
            if snippet.line < args.start_at:
                continue
            label = f"README.md:{snippet.line}  {key}"
            if rule.skip:
                print(f"skip  {label}  ({rule.skip})", flush=True)
                continue
            argv = argv_of(snippet, rule) if snippet.kind == "bash" else []
            print(f"run   {label}", flush=True)
            result = (rule.runner or (lambda s, a, w: run(a, cwd=w)))(snippet, argv, work)
            try:
                (rule.check or ok())(result, work)
            except CheckFailed as e:
                print(f"FAIL  {label}\n  ran: {shlex.join(argv) or 'python block'}\n  {e}\n--- output:\n"
                      f"{result.out[-4000:]}", flush=True)
                return 1
            print(f"ok    {label}  ({result.seconds:.0f} s{'; ran: ' + shlex.join(argv) if argv else ''})",
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"every README command ran and did what it says ({time.monotonic() - total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
