"""The environment a fresh clone gets: the lock that `make setup` installs from (requirements/lock.txt), and the
extras it installs (hydra/launcher=joblib composes with the Ax sweeper)."""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
DEFAULT_EXTRAS = ("dev", "baselines", "serve", "launchers")  # the Makefile's EXTRAS
TORCH_BUILD = re.compile(r"^(torch|triton|pytorch-triton|nvidia-.*|cuda-.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;+]+)", line.strip())
        assert m, f"lock line '{line}' is not 'name==version' (no local version, no URL)"
        out[_norm(m.group(1))] = m.group(2)
    return out


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def test_lock_covers_every_dependency_and_leaves_torch_to_the_makefile():
    lock = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in DEFAULT_EXTRAS:
        wanted += project["optional-dependencies"][extra]
    names = {_requirement_name(r) for r in wanted} - {"torch", "mtrank"}  # mtrank[baselines]: the project itself
    assert sorted(names - set(lock)) == []
    # torch's build (CPU wheel, PyPI's CUDA wheel, another index) is the Makefile's TORCH_SPEC / TORCH_INDEX choice
    assert [n for n in lock if TORCH_BUILD.match(n)] == []
    assert "mtrank" not in lock


def test_makefile_installs_from_the_lock():
    out = subprocess.run(
        ["make", "-n", "-B", "setup", "PYTHON=python3"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    installs = [line for line in out.stdout.splitlines() if "pip install" in line and "--upgrade" not in line]
    assert len(installs) == 2, out.stdout  # torch (TORCH_SPEC), then the project with its extras
    assert all("-c requirements/lock.txt" in line for line in installs), installs
    assert '"torch==2.13.0"' in installs[0] and '-e ".[dev,baselines,serve,launchers]"' in installs[1]
    unlocked = subprocess.run(
        ["make", "-n", "-B", "setup", "LOCK="], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "-c " not in unlocked.stdout


@pytest.mark.skipif(not os.environ.get("MTRANK_LOCK"), reason="set by `make test` (the environment it installed)")
def test_installed_versions_are_the_locked_ones():
    lock = _lock()
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {n: (installed[n], v) for n, v in lock.items() if n in installed and installed[n].split("+")[0] != v}
    assert drift == {}, (
        f"installed ≠ locked (installed, locked): {drift}; reinstall from the lock: "
        "`rm .venv/.mtrank-installed && make setup`"
    )
    missing = sorted(
        n for n in ("fastapi", "uvicorn", "httpx", "hydra-joblib-launcher", "polars") if n not in installed
    )
    assert missing == []


def test_joblib_launcher_composes_with_the_ax_sweeper():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hparams_search=ax_multitask",
                "hydra/launcher=joblib",
                "hydra.sweeper.batch_size=2",
                "hydra.launcher.n_jobs=2",
            ],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert cfg.hydra.launcher.n_jobs == 2
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.mtrank_ax_sweeper.ax_sweeper.AxSweeper"
    assert cfg.hydra.sweeper.batch_size == 2
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert cfg.hydra.launcher._target_ in found
