"""The KuaiRand-Pure split sizes quoted in docs/data.md and conf/ are those of the shipped config (Beijing day of
``time_ms``), not those of the log's own ``date`` column (skipped without the data set)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
LOG = SHARED_DATA / "kuairand_pure" / "interactions_20220425_20220430.parquet"

pytestmark = pytest.mark.skipif(not LOG.exists(), reason=f"KuaiRand-Pure is not in {LOG.parent}")


def test_documented_train_rows_are_the_configs():
    df = pl.read_parquet(LOG, columns=["time_ms", "date"])
    day = (
        pl.from_epoch("time_ms", time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Shanghai")
        .dt.day()
    )  # conf/data/kuairand.yaml: time_zone Asia/Shanghai
    days = df.select(day.alias("d"))["d"]
    train, val, test = int((days <= 28).sum()), int((days == 29).sum()), int((days == 30).sum())
    by_date_column = int((df["date"] <= 20220428).sum())
    assert (train, val, test) == (57_855, 15_889, 21_040) and by_date_column == 57_741
    data_md = (ROOT / "docs" / "data.md").read_text()
    assert "train 04-25..28 (57,855 rows" in data_md and "val 04-29 (15,889), test 04-30 (21,040)" in data_md
    assert "38 positives in 57,855 rows" in (ROOT / "conf" / "tasks" / "kuairand.yaml").read_text()
    assert "# 57,855 train rows" in (ROOT / "conf" / "experiment" / "kuairand.yaml").read_text()
