"""Every bad input gets an error naming the file and the column (or config key), and leaves no half-written cache."""

import polars as pl
import pytest

from conftest import make_log, pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import process


def _run(tmp_path, path, **overrides):
    return process(PipelineConfig.from_mapping(pipeline_mapping(path, **overrides)), tmp_path / "proc")


def _assert_clean_cache(tmp_path):
    proc = tmp_path / "proc"
    leftovers = list(proc.iterdir()) if proc.exists() else []
    assert leftovers == [], f"half-written cache entries left behind: {leftovers}"


def _write(tmp_path, df: pl.DataFrame, name="bad.parquet"):
    path = tmp_path / name
    df.write_csv(path) if name.endswith(".csv") else df.write_parquet(path)
    return path


@pytest.mark.parametrize(
    "mutate, name, pattern",
    [
        (lambda df: df.drop("click"), "bad.parquet", r"bad\.parquet is missing column\(s\) 'click' \(data\.columns\.labels\.click\)"),
        (lambda df: df.with_columns(pl.col("price").cast(pl.String)), "bad.parquet",
         r"column 'price' .* in file .*bad\.parquet has dtype String; expected a numeric type"),
        (lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(2).otherwise(pl.col("save")).alias("save")),
         "bad.parquet", r"label column 'save' in file .*bad\.parquet has 1 value\(s\) outside \{0, 1\} \(e\.g\. 2\.0\)"),
        (lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("click")).alias("click")),
         "bad.parquet", r"label column 'click' in file .*bad\.parquet has 1 null value"),
        (lambda df: df.head(0), "bad.parquet", r"file .*bad\.parquet holds no rows"),
    ],
)
def test_bad_files_name_file_and_column(tmp_path, mutate, name, pattern):
    path = _write(tmp_path, mutate(make_log()), name)
    with pytest.raises(DataValidationError, match=pattern):
        _run(tmp_path, path)
    _assert_clean_cache(tmp_path)


def test_text_in_numeric_csv_column(tmp_path):
    df = make_log().with_columns(pl.col("price").cast(pl.String))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("n/a")).otherwise(pl.col("price")).alias("price"))
    path = _write(tmp_path, df, "typed.csv")
    with pytest.raises(DataValidationError, match=r"column 'price' .* in file .*typed\.csv has dtype String"):
        _run(tmp_path, path)


def test_missing_path(tmp_path):
    with pytest.raises(DataValidationError, match=r"data\.inputs: path .*nowhere\.parquet does not exist"):
        _run(tmp_path, tmp_path / "nowhere.parquet")


def test_not_parquet_or_csv(tmp_path):
    path = tmp_path / "log.json"
    path.write_text("{}")
    with pytest.raises(DataValidationError, match=r"log\.json is neither Parquet nor CSV"):
        _run(tmp_path, path)


def test_parquet_name_with_other_content(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("request_id,click\n1,0\n")
    with pytest.raises(DataValidationError, match=r"fake\.parquet is not a Parquet file"):
        _run(tmp_path, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"empty\.csv is empty \(0 bytes\)"):
        _run(tmp_path, path)


def test_nan_policy_error_names_column_and_file(tmp_path):
    df = make_log().with_columns(pl.when(pl.int_range(pl.len()) < 4).then(float("nan")).otherwise(pl.col("price")).alias("price"))
    path = _write(tmp_path, df)
    with pytest.raises(DataValidationError, match=r"numeric column 'price' in file .*bad\.parquet has 4 null/NaN"):
        _run(tmp_path, path, encoding={"nan_policy": "error"})
    _assert_clean_cache(tmp_path)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"tasks": ["save", "purchase"]}, r"task\(s\) \['purchase'\] have no label column in data\.columns\.labels"),
        ({"downsample": {"beta": 0.0}}, r"data\.downsample\.beta = 0\.0: expected a keep rate in \(0, 1\]"),
        ({"split": {"by": "week"}}, r"data\.split\.by = 'week': expected one of \['time', 'request', 'random'\]"),
        ({"encoding": {"nan_policy": "drop"}}, r"data\.encoding\.nan_policy = 'drop'"),
        ({"shuffle": True}, r"unknown config key\(s\) data\.shuffle"),
    ],
)
def test_bad_data_config_names_the_key(tmp_path, log_file, overrides, pattern):
    with pytest.raises(DataValidationError, match=pattern):
        _run(tmp_path, log_file, **overrides)


def test_label_column_cannot_be_a_feature(tmp_path, log_file):
    m = pipeline_mapping(log_file)
    m["columns"]["numeric"] = ["price", "click"]
    with pytest.raises(DataValidationError, match=r"\['click'\] are label or excluded"):
        PipelineConfig.from_mapping(m)


def test_crash_mid_build_leaves_no_half_written_cache(tmp_path, log_file, monkeypatch):
    import mtrank.data.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "_write_json", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(tmp_path, log_file)
    _assert_clean_cache(tmp_path)
