"""Benchmark (b): preprocessing, raw → processed rows/s on simulated impressions, peak RSS ≤ 2 GB.

Two fresh processes: the first generates (or reuses) the raw logs of ``conf/data/simulated.yaml`` with
``n_impressions`` overridden (not counted); the second runs the pipeline (validate, split, encode, downsample,
shuffle, write shards; ``process(..., force=True)``, so nothing cached is reused) and reports its wall time and its
peak RSS (``ru_maxrss`` of that child). Rows/s counts raw impressions read.

    python scripts/bench_preprocess.py --impressions 10000000 [--threads 2] [--data-dir DIR]

``--threads`` sets POLARS_MAX_THREADS and OMP_NUM_THREADS of the processing child (default: unset, i.e. Polars
uses every core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mtrank.utils.bench import ROOT, default_pipeline, peak_rss_mb

TARGET_MB = 2048.0


def _simulator(n: int) -> dict:
    from omegaconf import OmegaConf

    sim = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "simulated.yaml").simulator)
    sim["n_impressions"] = n
    return sim


def child_generate(n: int, data_dir: Path) -> None:
    from mtrank.data.datamodule import simulated_logs

    t0 = time.perf_counter()
    raw = simulated_logs(_simulator(n), data_dir / "raw")
    print(json.dumps({"raw": str(raw), "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}))


def child_process(raw: str, data_dir: Path, beta: float | None) -> None:
    import polars as pl

    from mtrank.data.config import PipelineConfig
    from mtrank.data.pipeline import process

    cfg = PipelineConfig.from_mapping(default_pipeline([raw], beta=beta))
    t0 = time.perf_counter()
    processed = process(cfg, data_dir / "processed", force=True)
    wall = time.perf_counter() - t0
    meta = processed.metadata
    print(
        json.dumps(
            {
                "rows_in": meta["counts"]["rows_before"] + processed.rows("val") + processed.rows("test"),
                "rows_out": {s: processed.rows(s) for s in ("train", "val", "test")},
                "seconds": wall,
                "peak_rss_mb": peak_rss_mb(),
                "polars_threads": pl.thread_pool_size(),
            }
        )
    )


def _run(args: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impressions", type=int, default=10_000_000)
    p.add_argument("--beta", type=float, default=None, help="downsample keep rate (default: the config's, 0.1)")
    p.add_argument("--threads", type=int, default=None, help="POLARS_MAX_THREADS / OMP_NUM_THREADS of the child")
    p.add_argument("--data-dir", default=None, help="cache folder (default: a temporary one)")
    p.add_argument("--child", choices=["generate", "process"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--raw", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mtrank-prep-"))
    if args.child == "generate":
        return child_generate(args.impressions, data_dir)
    if args.child == "process":
        return child_process(args.raw, data_dir, args.beta)

    common = ["--impressions", str(args.impressions), "--data-dir", str(data_dir)]
    gen = _run(["--child", "generate", *common])
    env = {}
    if args.threads:
        env = {"POLARS_MAX_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    extra = ["--beta", str(args.beta)] if args.beta is not None else []
    res = _run(["--child", "process", "--raw", gen["raw"], *common, *extra], env)
    rate = res["rows_in"] / res["seconds"]
    print(f"raw logs: {gen['raw']} (generated or reused in {gen['seconds']:.1f} s, not counted)")
    print(
        f"processed {res['rows_in']:,} impressions -> train {res['rows_out']['train']:,} / val "
        f"{res['rows_out']['val']:,} / test {res['rows_out']['test']:,} rows; polars threads {res['polars_threads']}"
    )
    print(
        f"wall {res['seconds']:.1f} s, {rate / 1e6:.2f} M rows/s, peak RSS {res['peak_rss_mb']:.0f} MB "
        f"(ratio to the {TARGET_MB:.0f} MB target: {res['peak_rss_mb'] / TARGET_MB:.2f}, target ≤ 1.00)"
    )


if __name__ == "__main__":
    main()
