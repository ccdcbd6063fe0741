"""Benchmark (d): peak RSS of a training run over 1M against 10M simulated impressions (target ratio ≤ 1.2).

Each measurement runs in a fresh process: first the data is generated and processed (its own process, not
counted), then a training process (one epoch with validation, validation of the best checkpoint, the Platt
calibrators fitted on the validation split, test, and the evaluation report of the test split) reports its peak
RSS. What keeps it flat: binned AUROC / PR-AUC and a streaming ECE (mtrank.metrics), calibrators fitted on binned
validation scores (mtrank.calibration.calibrators.BinnedLabels) and the report written from batches (mtrank.scoring.report).

    python scripts/bench_memory.py --small 1000000 --large 10000000
    python scripts/bench_memory.py --override model.metrics.thresholds=null   # exact AUROC / PR-AUC, for comparison
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mtrank.utils.bench import ROOT, peak_rss_mb


def child(n: int, data_dir: str, log_dir: str, train: bool, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mtrank.jobs.train import build
    from mtrank.jobs.train import train as run_training

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(
            "train",
            overrides=[
                "experiment=multitask",
                f"data.simulator.n_impressions={n}",
                "trainer.max_epochs=1",
                "trainer.enable_progress_bar=false",
                "callbacks.progress_bar=null",
                f"paths.data_dir={data_dir}",
                f"paths.log_dir={log_dir}",
                *overrides,
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(log_dir) / f"run-{n}")
    if train:
        metrics = run_training(cfg)
        print(json.dumps({"peak_rss_mb": peak_rss_mb(), "val_auroc": metrics.get("val/mean/auroc")}))
    else:
        build(cfg)  # generate + process, cached for the training process
        print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def measure(n: int, data_dir: str, log_dir: str, train: bool, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--data-dir", data_dir, "--log-dir", log_dir]
    cmd += [f"--override={o}" for o in overrides]
    if train:
        cmd.append("--train")
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", type=int, default=1_000_000)
    p.add_argument("--large", type=int, default=10_000_000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--log-dir", default=None)
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="a Hydra override for both runs, e.g. model.metrics.thresholds=null (repeatable)",
    )
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="mtrank-mem-")
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="mtrank-mem-logs-")
    if args.child is not None:
        child(args.child, data_dir, log_dir, args.train, args.override)
        return
    rows = {}
    for n in (args.small, args.large):
        prep = measure(n, data_dir, log_dir, train=False, overrides=args.override)
        run = measure(n, data_dir, log_dir, train=True, overrides=args.override)
        rows[n] = (prep, run)
        print(
            f"{n:>12,} impressions: generating + processing peak RSS {prep['peak_rss_mb']:7.0f} MB; "
            f"training run peak RSS {run['peak_rss_mb']:7.0f} MB (val mean auroc {run['val_auroc']:.4f})"
        )
    ratio = rows[args.large][1]["peak_rss_mb"] / rows[args.small][1]["peak_rss_mb"]
    print(f"training peak RSS ratio {args.large:,} / {args.small:,}: {ratio:.2f} (target ≤ 1.2)")


if __name__ == "__main__":
    main()
