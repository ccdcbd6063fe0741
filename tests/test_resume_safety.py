"""Resume never continues or overwrites the wrong run (end to end, ``src/train.py`` in subprocesses).

* Run A is SIGKILLed, run B of the same task name (another config) finishes later; A's command with
  ``ckpt_path=last`` resumes A (not B, whose ``last.ckpt`` is newer) and leaves B's folder byte-identical.
* ``ckpt_path=last`` that matches no unfinished run is refused before Hydra creates or writes any folder: the
  message lists every candidate (folder, time, finished or not, what differs) and how to pick one.
* A resume whose checkpoint does not fit the model (changed hyper-parameters) is refused with every file of the
  run folder byte-identical (``config.yaml``, ``.hydra/*``, the log, no new ``csv/version_*``).
* A resume onto data with another fingerprint is refused naming both fingerprints and
  ``resume_allow_data_change=true``, folder untouched; with the override it continues and records the old one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from helpers import FAST_RUN
from killing import kill_at_step, train_cmd, train_env

# ~1.8k train rows after downsampling → 4 batches of 512 per epoch
RUN = [
    *FAST_RUN,
    "trainer.max_epochs=3",
    "callbacks.early_stopping=null",
    "report.enabled=false",
    "calibration=none",
    "callbacks.resume_checkpoint.every_n_train_steps=2",
]


_DATA: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def _shared_data(tmp_path_factory):
    """One data cache for the module: the simulated logs are generated and processed once."""
    _DATA["dir"] = tmp_path_factory.mktemp("data")
    yield
    _DATA.clear()


def _cmd(tmp: Path, task: str, *extra: str) -> list[str]:
    return train_cmd(RUN, task, _DATA["dir"], tmp / "logs", *extra)


def _run(cmd: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        assert done.returncode != 0, "expected a refusal"
    return done


def _killed(tmp: Path, task: str, *extra: str, step: int = 3) -> Path:
    """A run SIGKILLed at ``step`` (after a last.ckpt), its folder."""
    marker = tmp / f"paused_{task}_{time.time_ns()}"
    before = set((tmp / "logs" / task / "runs").glob("*")) if (tmp / "logs" / task / "runs").exists() else set()
    kill_at_step(_cmd(tmp, task, *extra), step, marker)
    (run_dir,) = set((tmp / "logs" / task / "runs").glob("*")) - before
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "metrics.json").exists()
    time.sleep(1.1)  # the next run gets another folder name (seconds)
    return run_dir


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _runs(tmp: Path, task: str) -> set[Path]:
    return set((tmp / "logs" / task / "runs").iterdir())


def test_last_resumes_the_run_with_the_same_config_not_the_newest(tmp_path):
    a = _killed(tmp_path, "rel")
    _run(_cmd(tmp_path, "rel", "trainer.max_epochs=1"))  # B: a quick run of the same task, finished
    (b,) = _runs(tmp_path, "rel") - {a}
    assert (b / "checkpoints" / "last.ckpt").stat().st_mtime > (a / "checkpoints" / "last.ckpt").stat().st_mtime
    b_before = _hashes(b)

    _run(_cmd(tmp_path, "rel", "ckpt_path=last"))  # A's command again
    assert _runs(tmp_path, "rel") == {a, b}  # no new folder
    assert json.loads((a / "metrics.json").read_text())["metrics"]  # A finished in its own folder
    assert (a / "csv" / "version_1" / "metrics.csv").exists()
    assert (a / ".hydra" / "config.yaml").exists() and (a / "rel.log").exists()
    assert _hashes(b) == b_before  # B untouched

    # now both have finished, and a third config matches neither: refused before any folder is made or written
    before = {d: _hashes(d) for d in (a, b)}
    for extra, why in [
        ((), "have finished: there is nothing to resume"),
        (("model.net.trunk=[32]",), "no unfinished run has this config"),
    ]:
        done = _run(_cmd(tmp_path, "rel", *extra, "ckpt_path=last"), ok=False)
        assert why in done.stderr, done.stderr[-3000:]
        assert f"{a}  last.ckpt" in done.stderr and f"{b}  last.ckpt" in done.stderr
        assert "finished (metrics.json)" in done.stderr
        assert "ckpt_path=<run folder>/checkpoints/last.ckpt" in done.stderr
        assert _runs(tmp_path, "rel") == {a, b}
        assert {d: _hashes(d) for d in (a, b)} == before
    assert "model.net.trunk: run [" in done.stderr and "now [32]" in done.stderr  # what differs is named


def test_a_refused_resume_leaves_the_run_folder_byte_identical(tmp_path):
    a = _killed(tmp_path, "hp")
    before = _hashes(a)
    assert {
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "config.yaml",
        "run_info.json",
        "hp.log",
        "csv/version_0/hparams.yaml",
    } <= set(before)
    # the run's own last.ckpt (as a requeued job would), with other hyper-parameters: the weights do not fit
    done = _run(_cmd(tmp_path, "hp", "model.net.trunk=[16]", "ckpt_path=auto", f"hydra.run.dir={a}"), ok=False)
    assert "its weights do not fit the model" in done.stderr and "shapes differ" in done.stderr, done.stderr[-3000:]
    assert _hashes(a) == before
    # same weights, another setting: refused by the config comparison
    done = _run(_cmd(tmp_path, "hp", "model.optimizer.lr=0.5", "ckpt_path=auto", f"hydra.run.dir={a}"), ok=False)
    assert "this config differs from its config.yaml (model.optimizer.lr: run 0.002, now 0.5)" in done.stderr, (
        done.stderr[-3000:]
    )
    assert _hashes(a) == before


def test_resume_onto_other_data_is_refused_unless_allowed(tmp_path):
    a = _killed(tmp_path, "data")
    before = _hashes(a)
    info = json.loads((a / "run_info.json").read_text())["data"]["fingerprint"]
    done = _run(_cmd(tmp_path, "data", "data.simulator.seed=5", "ckpt_path=last"), ok=False)
    msg = done.stderr
    assert f"cannot resume the run {a} on other data" in msg, msg[-3000:]
    assert f"inputs={info['inputs']} processed_key={info['processed_key']}" in msg
    assert "data.simulator.seed: run" in msg and "resume_allow_data_change=true" in msg
    assert _hashes(a) == before
    assert _runs(tmp_path, "data") == {a}

    _run(_cmd(tmp_path, "data", "data.simulator.seed=5", "ckpt_path=last", "resume_allow_data_change=true"))
    record = json.loads((a / "run_info.json").read_text())["data"]
    assert record["resumed_from_data"] == info
    assert record["fingerprint"] != info
    assert (a / "metrics.json").exists()
