"""Offline means offline: ``src/tune_utility.py wandb.enabled=true`` (W&B offline) makes no network connection and
no DNS query.

Each path runs in a subprocess with a ``sitecustomize`` that records (and blocks) every non-loopback
``socket.getaddrinfo`` / ``gethostbyname`` / ``connect`` of Python code, and, where ``strace`` can trace, under
``strace -f``, which also sees W&B's Go service (``wandb-core``: its DNS queries never pass through Python). Before
the fix the job resolved ``api.forge.coreweave.com`` (W&B's telemetry probing its default server).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("localhost", "127.", "::1", "0.0.0.0", "ip6-localhost")

SITECUSTOMIZE = textwrap.dedent(
    """
    import os, socket

    _LOG = os.environ["MTRANK_NET_LOG"]
    _LOOPBACK = %r

    def _remote(host):
        if host is None:
            return False
        host = host.decode() if isinstance(host, bytes) else str(host)
        return not (host == "" or host.startswith(_LOOPBACK))

    def _record(what):
        with open(_LOG, "a") as f:
            f.write(what + "\\n")
        raise OSError("network blocked by the offline test: " + what)

    _getaddrinfo, _gethostbyname, _connect = socket.getaddrinfo, socket.gethostbyname, socket.socket.connect
    _gethostbyname_ex = socket.gethostbyname_ex

    def getaddrinfo(host, *a, **k):
        if _remote(host):
            _record(f"getaddrinfo {host}")
        return _getaddrinfo(host, *a, **k)

    def gethostbyname(host):
        if _remote(host):
            _record(f"gethostbyname {host}")
        return _gethostbyname(host)

    def gethostbyname_ex(host):
        if _remote(host):
            _record(f"gethostbyname_ex {host}")
        return _gethostbyname_ex(host)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _remote(address[0]):
            _record(f"connect {address}")
        return _connect(self, address)

    socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = getaddrinfo, gethostbyname, gethostbyname_ex
    socket.socket.connect = connect
    """
    % (LOOPBACK,)
)

INET = re.compile(r"sa_family=AF_INET6?, .*?(?:sin_addr=inet_addr\(\"([^\"]+)\"\)|inet_pton\(AF_INET6, \"([^\"]+)\")")


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=none", "true"], capture_output=True, timeout=30)
    return done.returncode == 0


def _remote_syscalls(trace: Path) -> list[str]:
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        if not re.search(r"\b(connect|sendto|sendmsg|sendmmsg)\(", line):
            continue
        m = INET.search(line)
        if m and not (m.group(1) or m.group(2) or "").startswith(LOOPBACK):
            out.append(line[:300])
    return out


def _run_offline(tmp_path: Path, cmd: list[str]) -> tuple[list[str], list[str], str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    net_log, trace = tmp_path / "python_net.log", tmp_path / "strace.txt"
    net_log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # nothing pre-set by the caller
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "tests")]),
        MTRANK_NET_LOG=str(net_log),
        OMP_NUM_THREADS="1",
        HOME=str(tmp_path / "home"),
    )
    traced = _strace_works()
    if traced:
        cmd = [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg,sendmmsg",
            "-e",
            "signal=none",
            "-o",
            str(trace),
            *cmd,
        ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    python_calls = [line for line in net_log.read_text().splitlines() if line]
    return python_calls, (_remote_syscalls(trace) if traced else []), done.stderr


def test_tune_utility_with_offline_wandb_makes_no_network_call(tmp_path):
    from mtrank.tuning.synthetic import simulated_predictions

    predictions = tmp_path / "predictions.parquet"
    simulated_predictions(5_000, noise=0.5, seed=0).write_parquet(predictions)
    out = tmp_path / "run"
    python_calls, syscalls, _ = _run_offline(
        tmp_path,
        [
            sys.executable,
            str(ROOT / "src" / "tune_utility.py"),
            f"predictions={predictions}",
            f"paths.output_dir={out}",
            "n_trials=2",
            "generation.method=random_search",
            "compare_random=false",
            "wandb.enabled=true",
            f"hydra.run.dir={out}",
        ],
    )
    assert list(out.glob("wandb/offline-run-*")), "W&B did not run offline in the run folder"
    assert python_calls == []
    assert syscalls == []


def test_the_recorder_sees_a_remote_lookup(tmp_path):
    """The harness itself: a remote name lookup is recorded by the Python recorder, and a connection made below
    Python's socket module (as a Go service would) by strace, where it can trace."""
    script = tmp_path / "lookup.py"
    script.write_text(
        textwrap.dedent("""
        import socket, _socket
        try:
            socket.getaddrinfo("example.invalid", 443)
        except OSError:
            pass
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)  # not the patched class; UDP connect sends nothing
        s.connect(("10.255.255.1", 53))
        s.close()
    """)
    )
    python_calls, syscalls, _ = _run_offline(tmp_path, [sys.executable, str(script)])
    assert python_calls == ["getaddrinfo example.invalid"]
    if not _strace_works():
        pytest.skip("strace cannot trace here: only the Python-level recorder was checked")
    assert len(syscalls) == 1 and "10.255.255.1" in syscalls[0]
