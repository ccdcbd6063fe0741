"""The raw-log and processed-data caches under concurrent runs and after killed ones.

* Two processes that generate the same new simulator config at the same moment both succeed and get the same
  files (a barrier holds both until each has simulated, so both really race for the rename).
* A temporary build folder whose owning pid is dead (or, without a pid, that is old) is removed by the next run,
  with an INFO line; one whose owner still runs, or a recent one, is kept.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mtrank.utils.tmpdirs import make_tmp_dir, remove_stale

SIM = {"n_impressions": 6000, "n_files": 2, "seed": 11}

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import mtrank.data.simulator as simulator
    from mtrank.data.simulator_config import SimulatorConfig

    raw_root, barrier, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    real = simulator.simulate

    def simulate_then_wait(cfg):
        df = real(cfg)
        (barrier / me).touch()
        deadline = time.time() + 120
        while len(list(barrier.iterdir())) < 2:  # both have simulated: both will try to rename
            assert time.time() < deadline, "the other process never got here"
            time.sleep(0.01)
        return df

    simulator.simulate = simulate_then_wait
    out = raw_root / "simulated-race"  # what mtrank.data.datamodule.simulated_logs calls, without importing torch
    assert simulator.generate_logs(SimulatorConfig.from_mapping(%r), out)
    print("OUT", out, sorted(p.name for p in out.iterdir()))
    """
    % SIM
)


def test_two_processes_generating_the_same_new_config_both_succeed(tmp_path):
    raw_root, barrier = tmp_path / "raw", tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(raw_root), str(barrier), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    lines = [next(line for line in out.splitlines() if line.startswith("OUT")) for out, _ in outs]
    assert lines[0] == lines[1]  # same folder, same files
    assert "impressions-00000.parquet" in lines[0] and "simulator_config.json" in lines[0]
    assert sorted(p.name for p in raw_root.iterdir()) == [lines[0].split()[1].rsplit("/", 1)[1]]  # no tmp left


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_folders_are_removed_with_an_info_line(tmp_path, caplog):
    from mtrank.data.datamodule import simulated_logs

    raw_root = tmp_path / "raw"
    mine = make_tmp_dir(raw_root, "simulated-0123456789")  # this (running) process: kept
    dead = make_tmp_dir(raw_root, "simulated-0123456789")
    (dead / "impressions-00000.parquet").write_bytes(b"half a file")
    pid = _dead_pid()
    dead_named = dead.with_name(dead.name.replace(f"~{os.getpid()}~", f"~{pid}~"))
    dead.rename(dead_named)
    old = raw_root / ".simulated-0123456789.tmp-abcd"  # an older version's mkdtemp name: no pid, 2 days old
    old.mkdir()
    two_days = time.time() - 48 * 3600
    os.utime(old, (two_days, two_days))
    recent = raw_root / ".simulated-0123456789.tmp-efgh"  # no pid, recent: may be someone's, kept
    recent.mkdir()
    other = raw_root / ".tmp-notours"  # not this cache entry's: never touched
    other.mkdir()
    os.utime(other, (two_days, two_days))

    with caplog.at_level(logging.INFO, logger="mtrank.utils.tmpdirs"):
        removed = remove_stale(raw_root, (".tmp-simulated-0123456789~*", ".simulated-0123456789.tmp-*"))
    assert sorted(removed) == sorted([dead_named, old])
    assert not dead_named.exists() and not old.exists()
    assert mine.exists() and recent.exists() and other.exists()
    assert f"left by pid {pid} on this host, which is no longer running" in caplog.text
    assert str(dead_named) in caplog.text

    # the cache calls it: a run of another simulator config sweeps only its own entry's leftovers
    mine.rename(mine.with_name(mine.name.replace(f"~{os.getpid()}~", f"~{pid}~")))
    with caplog.at_level(logging.INFO):
        out = simulated_logs(SIM, raw_root)
    left = sorted(p.name for p in raw_root.iterdir())
    assert out.name in left and ".tmp-notours" in left
    leftovers = [n for n in left if n.startswith(".tmp-simulated-0123456789")]
    assert len(leftovers) == 1  # another entry's dead leftover is not this run's to sweep


def test_processed_cache_sweeps_its_dead_leftovers(tmp_path, caplog):
    import hydra

    from helpers import FAST_RUN, compose_config

    cfg = compose_config("train", FAST_RUN, tmp_path)
    root = Path(cfg.data.processed_dir)
    dead = make_tmp_dir(root, f"{cfg.data.pipeline.name}-0000000000000000")
    (dead / "metadata.json").write_text("{}")
    pid = _dead_pid()
    dead = dead.rename(dead.with_name(dead.name.replace(f"~{os.getpid()}~", f"~{pid}~")))
    dm = hydra.utils.instantiate(cfg.data, _recursive_=False)
    with caplog.at_level(logging.INFO, logger="mtrank.utils.tmpdirs"):
        dm.prepare_data()
    assert not dead.exists()
    assert f"Removed the stale temporary folder {dead}" in caplog.text
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == []
