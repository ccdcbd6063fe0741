"""CPU accounting of the benchmarks (``mtrank.utils.bench``): a live child's CPU time is counted, a gone one is not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mtrank.utils.bench import cpu_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children's CPU is read from /proc")

# burns a fixed amount of CPU, says so, then waits (alive, idle) until its input closes
CHILD = "sum(i * i for i in range(3_000_000)); print('done', flush=True); import sys; sys.stdin.read()"


def test_cpu_seconds_counts_a_live_childs_cpu_and_skips_a_gone_one():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        with_child, alone = cpu_seconds([child.pid]), cpu_seconds()
        assert with_child - alone >= 0.05  # the child's loop, not this process's (which only waited)
    finally:
        child.communicate("")
    assert cpu_seconds([child.pid]) - cpu_seconds() < 0.05  # reaped: no /proc entry, counts as 0
