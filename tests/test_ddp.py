"""DDP on CPU (two gloo processes), launched the way a user launches it: `python src/train.py trainer=ddp_cpu`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_ddp_cpu_reads_every_row_once_and_ranks_agree(tmp_path):
    audit = tmp_path / "audit"
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "experiment=multitask",
        "debug=fast",
        "trainer=ddp_cpu",
        "data.simulator.n_impressions=12000",
        "data.batch_size=500",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "callbacks.throughput=null",
        "+callbacks.audit._target_=mtrank.training.audit.RowAudit",
        f"+callbacks.audit.out_dir={audit}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    processed = next((tmp_path / "data" / "processed").glob("simulated-*"))
    train = pl.concat([pl.read_parquet(p) for p in sorted((processed / "train").glob("*.parquet"))])

    def keys(a):
        return np.sort(np.ascontiguousarray(a, dtype=np.int64).view("i8,i8").ravel())

    expected = keys(train.select("request_id", "item_id").to_numpy())
    for epoch in (0, 1):
        r0 = np.load(audit / f"rows_rank0_epoch{epoch}.npy")
        r1 = np.load(audit / f"rows_rank1_epoch{epoch}.npy")
        assert len(r0) > 0 and len(r1) > 0 and abs(len(r0) - len(r1)) <= 500
        seen = keys(np.concatenate([r0, r1]))
        assert len(seen) == len(expected) and (seen == expected).all(), "every train row exactly once per epoch"
    m0 = json.loads((audit / "val_metrics_rank0.json").read_text())
    m1 = json.loads((audit / "val_metrics_rank1.json").read_text())
    assert m0.keys() == m1.keys() and "val/click/auroc" in m0
    for k in m0:
        assert m0[k] == pytest.approx(m1[k], rel=1e-6, abs=1e-7), k
    # one rank writes the reports: one run folder with one metrics.json
    runs = list((tmp_path / "logs" / "debug" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").exists()
