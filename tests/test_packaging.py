"""Packaging as a user meets it: `python -m build` makes an sdist and a wheel from one version;
the wheel installs into a fresh venv, whose `zerokv --version` and quick start work.

The fresh venv reuses this environment's installed dependencies (a .pth line to its
site-packages) and installs the wheel with --no-deps, so nothing large is downloaded; the test
then checks that every dependency the wheel declares is importable there.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import zerokv

ROOT = Path(__file__).resolve().parents[1]
QUICK_START = """
import numpy as np
import zerokv

assert zerokv.__file__.startswith(sys.prefix), zerokv.__file__   # the wheel's copy, not the clone
cfg = zerokv.WorldModelConfig(observation_shape=(4,), action_space_size=2, env_num=8,
                              num_simulations=25, cache_backend="paged")
model = zerokv.WorldModel(cfg).eval()
obs = np.random.rand(8, 4).astype(np.float32)
out = zerokv.plan(model, obs, config=zerokv.SearchConfig(num_simulations=25), rng=np.random.default_rng(0))
assert out.action.shape == (8,) and model.cache_stats().fallbacks == 0
from zerokv.presets import preset_path
assert preset_path("cartpole").is_file()                           # package data shipped
import importlib.metadata as md
from packaging.requirements import Requirement
missing = []
for text in md.requires("zerokv"):
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue  # an extra's, or another Python's (tomli before 3.11)
    try:
        if md.version(requirement.name) not in requirement.specifier:
            missing.append(f"{requirement.name} {md.version(requirement.name)} (wants {requirement.specifier})")
    except md.PackageNotFoundError:
        missing.append(requirement.name)
assert not missing, missing
print("quick start ok", zerokv.__version__)
"""


def test_version_has_one_source():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "zerokv.version.__version__"' in text
    assert "\nversion =" not in text.split("[project]")[1].split("[")[0]


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_quick_start(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, text=True)
    wheels = sorted(dist.glob("*.whl"))
    assert [p.name for p in wheels] == [f"zerokv-{zerokv.__version__}-py3-none-any.whl"]
    assert (dist / f"zerokv-{zerokv.__version__}.tar.gz").is_file()

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "reuse_deps.pth").write_text(ours + "\n")  # torch & co. without a download
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheels[0])], check=True, capture_output=True, text=True)
    version = subprocess.run([str(env / "bin" / "zerokv"), "--version"], check=True, capture_output=True, text=True)
    assert version.stdout.strip() == f"zerokv {zerokv.__version__}"
    run = subprocess.run([str(python), "-c", "import sys\n" + QUICK_START], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"quick start ok {zerokv.__version__}" in run.stdout
