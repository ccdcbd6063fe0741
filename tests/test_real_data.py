"""data=kuairand and data=census on small slices of the real files in ../shared/data (skipped when absent).

The shipped configs are composed as src/train.py composes them; only the input files are overridden, with the
command-line keys a user would use, so these tests also check that every input is overridable.
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from conftest import SHARED_DATA
from helpers import compose_config
from mtrank.data.config import PipelineConfig
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import process

KUAIRAND = SHARED_DATA / "kuairand_pure"
CENSUS = SHARED_DATA / "census_income_kdd"
LOG = KUAIRAND / "interactions_20220425_20220430.parquet"
CENSUS_FILE = CENSUS / "census_income_kdd_test_half_a.parquet"

pytestmark = pytest.mark.skipif(
    not (LOG.exists() and CENSUS_FILE.exists()),
    reason=f"the real data sets are not in {SHARED_DATA} (KuaiRand-Pure and census-income; see docs/data.md)",
)


def _load(processed, split: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p, _ in processed.files(split)])


@pytest.fixture(scope="module")
def kuairand_slice(tmp_path_factory) -> tuple[pl.DataFrame, str]:
    """Every 40th row of the log (all six days) plus 30 rows that are exact copies of others in the file, and the
    first 4 hides (the slice alone has none in train: a task without a train positive is an error)."""
    log = pl.read_parquet(LOG)
    sample = log.filter(pl.int_range(pl.len()) % 40 == 0)
    dups = log.filter(pl.struct(pl.all()).is_duplicated()).unique(maintain_order=True).head(30)
    hides = log.filter(pl.col("is_hate") == 1).head(4)
    part = pl.concat([sample, dups, dups, hides]).sort(["time_ms", "user_id", "video_id"])
    path = tmp_path_factory.mktemp("kuairand") / "slice.parquet"
    part.write_parquet(path)
    return part, str(path)


def _kuairand_cfg(tmp_path, inputs: str, *extra: str) -> PipelineConfig:
    cfg = compose_config(
        "train", ["experiment=kuairand", "tasks=kuairand_ext", f"data.pipeline.inputs=[{inputs}]", *extra], tmp_path
    )
    return PipelineConfig.from_mapping(cfg.data.pipeline)


def test_kuairand_pipeline_on_a_slice(tmp_path, kuairand_slice):
    part, path = kuairand_slice
    cfg = _kuairand_cfg(tmp_path, path)
    processed = process(cfg, tmp_path / "proc")
    meta = processed.metadata
    # split by Beijing-time day: train 04-25..28, val 04-29, test 04-30 (the log's own date column agrees on
    # about 99% of rows; it is not the time column)
    day = (
        pl.from_epoch("time_ms", time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Shanghai")
        .dt.day()
    )
    days = part.select(day.alias("d"))["d"]
    assert processed.rows("val") == int((days == 29).sum())
    assert processed.rows("test") == int((days == 30).sum())
    # nothing dropped: the duplicated rows are kept, and reported
    assert sum(processed.rows(s) for s in ("train", "val", "test")) == part.height
    n_dup = part.height - part.n_unique()
    assert meta["duplicate_rows"]["total"] == n_dup >= 30
    # labels map onto task names
    for task, col in {"click": "is_click", "save": "is_like", "hide": "is_hate", "follow": "is_follow"}.items():
        assert sum(meta["splits"][s]["positives"][task] for s in ("train", "val", "test")) == int(part[col].sum())
    # leaking columns are never features; side-table features are
    names = [f["name"] for f in meta["features"]["categorical"]] + [f["name"] for f in meta["features"]["numeric"]]
    assert not {"play_time_ms", "profile_stay_time", "comment_stay_time", "is_click", "long_view"} & set(names)
    assert {"user_active_degree", "onehot_feat12", "author_id", "tag", "video_duration"} <= set(names)
    cat = {f["name"]: f for f in meta["features"]["categorical"]}
    assert cat["user_active_degree"]["dtype"] == "String" and cat["onehot_feat12"]["dtype"] == "Int64"
    # null side-table values: video_duration is filled (and counted per impression), onehot_feat12 is OOV
    videos = pl.read_parquet(KUAIRAND / "video_features_basic.parquet")
    null_videos = videos.filter(pl.col("video_duration").is_null())["video_id"]
    assert meta["numeric_missing_filled"]["video_duration"] == int(part["video_id"].is_in(null_videos.implode()).sum())
    assert all(sum(t["unmatched_impressions"].values()) == 0 for t in meta["side_tables"])
    tr = _load(processed, "train")
    assert tr["num__video_duration"].null_count() == 0 and not tr["num__video_duration"].is_nan().any()


def test_kuairand_test_file_and_side_tables_overridable(tmp_path, kuairand_slice):
    part, path = kuairand_slice
    other = tmp_path / "other_period.parquet"
    part.filter(pl.int_range(pl.len()) % 3 == 0).write_parquet(other)
    users = tmp_path / "users.csv"
    pl.read_parquet(KUAIRAND / "user_features.parquet").write_csv(users)
    cfg = _kuairand_cfg(
        tmp_path, path, f"data.pipeline.split_inputs.test=[{other}]", f"data.pipeline.side_tables.users.path={users}"
    )
    processed = process(cfg, tmp_path / "proc")
    assert processed.metadata["source"]["files"]["test"] == [str(other)]
    assert processed.metadata["source"]["side_tables"][0] == str(users)
    assert processed.rows("test") == pl.read_parquet(other).height
    # with the test split from its own file, data.pipeline.inputs gives train (before 04-29) and val (from 04-29 on)
    assert processed.rows("train") + processed.rows("val") == part.height


def test_kuairand_leaking_column_as_feature_is_refused(tmp_path, kuairand_slice):
    _, path = kuairand_slice
    with pytest.raises(DataValidationError, match=r"\['play_time_ms'\] are label or excluded \(leaking\) columns"):
        _kuairand_cfg(tmp_path, path, "data.pipeline.columns.numeric=[play_time_ms]")


@pytest.fixture(scope="module")
def census_slice(tmp_path_factory) -> tuple[pl.DataFrame, str]:
    part = pl.read_parquet(CENSUS_FILE).head(3000)
    path = tmp_path_factory.mktemp("census") / "slice.parquet"
    part.write_parquet(path)
    return part, str(path)


def test_census_pipeline_on_a_slice(tmp_path, census_slice):
    part, path = census_slice
    cfg = compose_config("train", ["experiment=census_mmoe", f"data.pipeline.inputs=[{path}]"], tmp_path)
    processed = process(PipelineConfig.from_mapping(cfg.data.pipeline), tmp_path / "proc")
    meta = processed.metadata
    names = [f["name"] for f in meta["features"]["categorical"]] + [f["name"] for f in meta["features"]["numeric"]]
    assert not {"marital_stat", "income_50k_raw", "instance_weight", "label_income_50k"} & set(names)
    assert meta["tasks"] == ["income", "never_married"]
    assert sum(meta["splits"][s]["positives"]["income"] for s in ("train", "val", "test")) == int(
        part["label_income_50k"].sum()
    )
    rows = [processed.rows(s) for s in ("train", "val", "test")]
    assert sum(rows) == part.height and all(
        math.isclose(r / part.height, f, abs_tol=0.04) for r, f in zip(rows, (0.6, 0.2, 0.2))
    )
    vocab = pl.read_parquet(processed.directory / "vocab" / "education.parquet")
    assert vocab.schema["value"] == pl.String and "Bachelors degree(BA AB BS)" in vocab["value"].to_list()


@pytest.mark.parametrize(
    "overrides",
    [
        ["tasks.names=[income]", "model.net.head_bias_init=-2.74"],  # the single-task baseline: one head
        ["model=logistic"],
    ],
    ids=["single_task", "logistic"],
)
def test_census_baselines_train_on_a_slice(tmp_path, census_slice, overrides):
    from mtrank.jobs.train import train

    _, path = census_slice
    cfg = compose_config(
        "train",
        [
            "experiment=census",
            f"data.pipeline.inputs=[{path}]",
            "trainer.max_epochs=1",
            "logger=[]",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "~callbacks.throughput",
            "trainer.enable_model_summary=false",
            *overrides,
        ],
        tmp_path,
    )
    metrics = train(cfg)
    tasks = list(cfg.tasks.names)
    for t in tasks:
        assert 0.6 < metrics[f"test/{t}/auroc"] <= 1.0, (t, metrics[f"test/{t}/auroc"])
    assert not any(k.startswith("test/never_married") for k in metrics) or "never_married" in tasks
