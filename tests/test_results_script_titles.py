"""scripts/real_data_results.py: table titles from the composed split config, a "Produced by" line that reruns it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import real_data_results as rdr  # noqa: E402


def _title(name: str, *overrides: str) -> str:
    return rdr.split_title(rdr.compose(rdr.DATASETS[name], None, list(overrides)).data.pipeline)


def test_titles_follow_the_split_config():
    assert _title("census") == "census_income_kdd_test_half_a, random 60/20/20 (train/val/test)"
    assert _title("census", "data.pipeline.split_inputs.test=[/d/census_income_kdd_test_half_b.parquet]") == \
        "census_income_kdd_test_half_a, random 80/20 (train/val), test: census_income_kdd_test_half_b"
    assert _title("kuairand") == "interactions_20220425_20220430, by time: val from 2022-04-29, test from 2022-04-30"
    # once fixed as "test 04-30" whatever the test file
    assert _title("kuairand", "data.pipeline.split_inputs.test=[/d/log_0501_0508.parquet]").endswith(
        "by time: val from 2022-04-29, test: log_0501_0508")


def test_produced_by_keeps_the_run_and_data_folders():
    args = argparse.Namespace(datasets=["census"], seeds=[0, 1], variants=list(rdr.VARIANTS) + [rdr.POPULARITY],
                              out="/tmp/me/real", data_dir="/tmp/me/data", overrides=["trainer.max_epochs=3"])
    assert rdr.produced_by(args) == ("OMP_NUM_THREADS=1 python scripts/real_data_results.py --datasets census "
                                     "--seeds 0 1 --out /tmp/me/real --data-dir /tmp/me/data trainer.max_epochs=3")
    args.data_dir = None
    assert "--data-dir" not in rdr.produced_by(args)
