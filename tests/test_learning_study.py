"""scripts/learning_study.py on hand-made runs: what it reads from progress.csv, how it summarises."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "learning_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("learning_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_study"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules["learning_study"]


def write_progress(path: Path, rows: list[dict]) -> Path:
    fields = ["env_steps", "return/eval", "return/eval_std", "speed/sims_per_s", "speed/env_steps_per_s",
              "time/iteration_s"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_read_progress_finds_the_first_solving_evaluation(study, tmp_path):
    path = write_progress(tmp_path / "progress.csv", [
        {"env_steps": 128, "speed/sims_per_s": 100, "speed/env_steps_per_s": 10, "time/iteration_s": 1.5},
        {"env_steps": 5120, "return/eval": 474.9, "return/eval_std": 3, "speed/sims_per_s": 300,
         "speed/env_steps_per_s": 30, "time/iteration_s": 2},
        {"env_steps": 10112, "return/eval": 500, "return/eval_std": 0, "speed/sims_per_s": 200,
         "speed/env_steps_per_s": 20, "time/iteration_s": 4},
        {"env_steps": 10240, "speed/sims_per_s": 200, "speed/env_steps_per_s": 20, "time/iteration_s": 8},
    ])
    got = study.read_progress(path)
    assert got["evals"] == [(5120, 474.9, 3.0), (10112, 500.0, 0.0)]
    assert got["solved_at"] == 10112 and got["env_steps"] == 10240
    assert got["train_s"] == 7.5  # iterations up to the solving evaluation, not the one after it
    assert got["sims_per_s"] == 200 and got["env_steps_per_s"] == 20  # medians over iterations


def row(seed, mode, solved, wall, sims):
    return {"seed": seed, "mode": mode, "solved_at_env_steps": solved, "wall_s": 2 * wall, "train_s": wall,
            "sims_per_s": sims,
            "final_eval_return": 500.0 if solved else 300.0, "env_steps_per_s": 40.0, "evals": "5120:200.0"}


def test_summary_pairs_each_run_with_its_seeds_baseline_and_states_the_verdict(study):
    base, fast = study.MODES[0].name, study.MODES[2].name
    rows = [row(0, base, "10112", 300, 500), row(0, fast, "10112", 600, 250),
            row(1, base, "15104", 400, 400), row(1, fast, "", 1200, 200)]
    text = study.summarise(rows, total_env_steps=30_000)
    line = next(x for x in text.splitlines() if x.startswith(f"| {fast} |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[1:4] == ["2", "1/2", "20,056 (10,112–30,000)"]  # the unsolved run counts at the budget
    assert cells[5] == "2.50 (2.00–3.00)"  # wall ÷ the same seed's float32 one-leaf run
    assert cells[8] == "0.50 (0.50–0.50)"
    assert f"{fast}: median 20,056 env steps to solve, OUTSIDE" in text
    assert f"{fast}: more env steps than the same seed's {base} in 1 of 2 seeds, fewer in 0" in text
    assert study.verdict({base: [10_000.0, 20_000.0], fast: [15_000.0]}).endswith(
        "inside the float32 one-leaf seeds' range 10,000–20,000")


def test_rows_of_an_earlier_version_gain_training_time_from_their_runs(study, tmp_path):
    """A CSV written before ``train_s`` existed is filled from each run's progress.csv and rewritten
    with every column when the next row is appended."""
    mode = study.MODES[0]
    run = study.run_dir(str(tmp_path / "runs"), mode, 3)
    run.mkdir(parents=True)
    write_progress(run / "progress.csv", [
        {"env_steps": 1024, "return/eval": 480, "return/eval_std": 1, "speed/sims_per_s": 9,
         "speed/env_steps_per_s": 9, "time/iteration_s": 2.25}])
    old_fields = [f for f in study.FIELDS if f != "train_s"]
    path = tmp_path / "study.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_fields)
        writer.writeheader()
        writer.writerow({k: "" for k in old_fields} | {"seed": 3, "mode": mode.name})
    rows = study.read_rows(path)
    assert study.backfill_train_s(rows, str(tmp_path / "runs")) and rows[0]["train_s"] == 2.2
    assert not study.backfill_train_s(rows, str(tmp_path / "runs"))  # nothing left to fill
    study.append_row(path, {"seed": 4, "mode": mode.name, "train_s": 5.0})
    again = study.read_rows(path)
    assert list(again[0]) == study.FIELDS and [r["seed"] for r in again] == ["3", "4"]
    assert again[1]["train_s"] == "5.0"
