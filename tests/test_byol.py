"""Bring your own logs: what the data config can say about a user's files (side tables, time columns, split
files, float codes, duplicates), and one clear error for each mismatch between the config and the files."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import make_log, pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import process


def _process(tmp_path, mapping):
    return process(PipelineConfig.from_mapping(mapping), tmp_path / "proc")


def _load(processed, split: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p, _ in processed.files(split)])


def _users(n_users: int = 10) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": list(range(n_users)),
            "segment": [["new", "active", "lapsed"][i % 3] for i in range(n_users)],
            # an integer code stored as float because it has nulls, as in real exports
            "code": [float(i % 4) if i % 5 else None for i in range(n_users)],
            "followers": [float(10 * i) if i != 3 else None for i in range(n_users)],
        }
    )


def _with_users(tmp_path, log_path, users: pl.DataFrame | None = None, **table) -> dict:
    upath = tmp_path / "users.parquet"
    (users if users is not None else _users()).write_parquet(upath)
    t = {"path": str(upath), "on": "user_id", "categorical": ["segment", "code"], "log_numeric": ["followers"], **table}
    m = pipeline_mapping(log_path)
    m["columns"]["categorical"] = ["item_id", "category"]  # user_id is the join key only
    m["side_tables"] = {"users": t}
    return m


# ------------------------------------------------------------------------------------------ what works


def test_side_table_join_string_and_float_codes_and_nulls(tmp_path, log_file):
    processed = _process(tmp_path, _with_users(tmp_path, log_file))
    meta = processed.metadata
    feats = {f["name"]: f for f in meta["features"]["categorical"]}
    assert feats["segment"]["dtype"] == "String" and feats["code"]["dtype"] == "Int64"
    vocab = pl.read_parquet(processed.directory / feats["code"]["vocab_file"])
    assert sorted(vocab["value"].to_list()) == [0, 1, 2, 3]  # 1.0 became 1; null is not a value
    raw = make_log()
    tr = _load(processed, "train")
    # users whose code is null (ids 0 and 5) get the out-of-vocabulary index
    n_null_code = raw.filter(pl.col("user_id").is_in([0, 5])).height
    total_oov = sum(meta["splits"][s]["oov"]["code"] for s in ("train", "val", "test"))
    assert total_oov == n_null_code
    # the null follower count of user 3 is filled, and counted per impression
    assert meta["numeric_missing_filled"]["followers"] == raw.filter(pl.col("user_id") == 3).height
    assert tr["num__followers"].null_count() == 0
    assert meta["side_tables"][0]["name"] == "users"
    assert sum(meta["side_tables"][0]["unmatched_impressions"].values()) == 0


def test_side_tables_as_a_list_and_bare_yaml_on_key(tmp_path, log_file):
    m = _with_users(tmp_path, log_file)
    table = dict(m["side_tables"]["users"])
    table[True] = table.pop("on")  # what YAML 1.1 makes of a bare `on:` key
    m["side_tables"] = [table]
    processed = _process(tmp_path, m)
    assert processed.metadata["side_tables"][0]["name"] == "0"


def test_string_keys_join_integer_keys(tmp_path):
    df = make_log().with_columns(pl.col("user_id").cast(pl.String))
    path = tmp_path / "log.csv"
    df.write_csv(path)
    processed = _process(tmp_path, _with_users(tmp_path, path))
    assert sum(processed.metadata["side_tables"][0]["unmatched_impressions"].values()) == 0


def test_unmatched_keys_are_counted_and_warned(tmp_path, log_file, caplog):
    users = _users().filter(pl.col("user_id") != 7)
    with caplog.at_level("WARNING"):
        processed = _process(tmp_path, _with_users(tmp_path, log_file, users))
    n7 = make_log().filter(pl.col("user_id") == 7).height
    assert sum(processed.metadata["side_tables"][0]["unmatched_impressions"].values()) == n7 > 0
    assert "no row in side table" in caplog.text


def test_duplicate_rows_are_kept_and_reported(tmp_path, caplog):
    df = make_log()
    dup = pl.concat([df, df.slice(0, 8)]).sort("request_id", maintain_order=True)
    path = tmp_path / "dup.parquet"
    dup.write_parquet(path)
    with caplog.at_level("WARNING"):
        processed = _process(tmp_path, pipeline_mapping(path))
    assert processed.metadata["duplicate_rows"]["total"] == 8
    assert sum(processed.rows(s) for s in ("train", "val", "test")) == dup.height
    assert "KEPT" in caplog.text


def test_iso_time_strings_time_zone_and_cut_points(tmp_path):
    df = make_log().with_columns(
        (pl.datetime(2024, 1, 1) + pl.duration(hours=pl.col("timestamp")))
        .dt.strftime("%Y-%m-%d %H:%M:%S")
        .alias("timestamp")
    )
    path = tmp_path / "log.csv"
    df.write_csv(path)
    m = pipeline_mapping(path, split={"by": "time", "val_start": "2024-01-15", "test_start": "2024-01-18"})
    processed = _process(tmp_path, m)
    hours = make_log()["timestamp"]
    # ISO strings without an offset are wall-clock times: the cut points apply to them directly
    assert processed.rows("val") == int(((hours >= 14 * 24) & (hours < 17 * 24)).sum())
    assert processed.rows("test") == int((hours >= 17 * 24).sum())


def test_epoch_ms_with_time_zone_cuts_at_local_midnight(tmp_path):
    # 2022-04-29 00:00 in Beijing is 2022-04-28 16:00 UTC
    base = 1651161600000  # 2022-04-28 16:00:00 UTC in ms
    df = make_log(n_requests=5, k=1).with_columns(
        pl.Series("timestamp", [base - 2, base - 1, base, base + 86_400_000 - 1, base + 86_400_000], dtype=pl.Int64),
        # a positive and a negative in train (the two rows before the first cut)
        *[pl.Series(t, [1, 0, 1, 1, 1], dtype=pl.Int8) for t in ("save", "click", "long_click", "closeup")],
    )
    path = tmp_path / "log.parquet"
    df.write_parquet(path)
    m = pipeline_mapping(path, split={"by": "time", "val_start": "2022-04-29", "test_start": "2022-04-30"})
    m["columns"] |= {"time_unit": "ms", "time_zone": "Asia/Shanghai"}
    processed = _process(tmp_path, m)
    assert (processed.rows("train"), processed.rows("val"), processed.rows("test")) == (2, 2, 1)
    # the same cut points as epochs in the column's unit
    m["split"] |= {"val_start": base, "test_start": base + 86_400_000}
    again = _process(tmp_path, m)
    assert (again.rows("train"), again.rows("val"), again.rows("test")) == (2, 2, 1)
    assert again.metadata["time_cut_points_us"] == processed.metadata["time_cut_points_us"]


def test_split_inputs_test_only_with_inputs_for_train_and_val(tmp_path):
    df = make_log()
    main, other = tmp_path / "main.parquet", tmp_path / "other.parquet"
    df.slice(0, 160).write_parquet(main)
    make_log(n_requests=10, seed=3).with_columns(pl.col("request_id") + 1000).write_parquet(other)
    m = pipeline_mapping(
        main, split_inputs={"test": [str(other)]}, split={"by": "time", "val_fraction": 0.25, "test_fraction": 0.5}
    )
    processed = _process(tmp_path, m)
    assert processed.rows("test") == 40
    assert processed.rows("train") + processed.rows("val") == 160
    assert processed.rows("val") == 40  # test_fraction is unused: the test split comes from its own file
    assert processed.metadata["source"]["files"]["test"] == [str(other)]


def test_split_files_without_request_ids(tmp_path):
    paths = {}
    for s, part in (
        ("train", make_log().slice(0, 120)),
        ("val", make_log().slice(120, 40)),
        ("test", make_log().slice(160, 40)),
    ):
        paths[s] = tmp_path / f"{s}.parquet"
        part.write_parquet(paths[s])
    m = pipeline_mapping([], split_inputs={s: [str(p)] for s, p in paths.items()})
    m["columns"]["request_id"] = None  # rows are their own requests: ids must not repeat across files
    processed = _process(tmp_path, m)
    ids = [set(_load(processed, s)["request_id"].to_list()) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


# ------------------------------------------------------------------------------------------ errors


def _expect(tmp_path, mapping, pattern):
    with pytest.raises(DataValidationError, match=pattern):
        _process(tmp_path, mapping)
    leftovers = list((tmp_path / "proc").iterdir()) if (tmp_path / "proc").exists() else []
    assert leftovers == [], leftovers


def test_missing_feature_column_names_file_column_and_key(tmp_path, log_file):
    m = pipeline_mapping(log_file)
    m["columns"]["numeric"] = ["price", "discount"]
    _expect(
        tmp_path, m, r"log\.parquet is missing column\(s\) 'discount' \(data\.pipeline\.columns\.numeric/log_numeric\)"
    )


def test_missing_time_column(tmp_path, log_file):
    m = pipeline_mapping(log_file)
    m["columns"]["time"] = "ts"
    _expect(tmp_path, m, r"missing column\(s\) 'ts' \(data\.pipeline\.columns\.time\)")


def test_string_label_column(tmp_path):
    path = tmp_path / "log.parquet"
    make_log().with_columns(
        pl.when(pl.col("click") == 1).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("click")
    ).write_parquet(path)
    _expect(
        tmp_path,
        pipeline_mapping(path),
        r"column 'click' \(data\.pipeline\.columns\.labels\.click\) in file .*log\.parquet has dtype String; expected a numeric",
    )


def test_excluded_column_cannot_be_a_feature(tmp_path, log_file):
    m = pipeline_mapping(log_file)
    m["columns"]["exclude"] = ["price"]
    with pytest.raises(DataValidationError, match=r"\['price'\] are label or excluded \(leaking\) columns"):
        PipelineConfig.from_mapping(m)


def test_side_table_path_does_not_exist(tmp_path, log_file):
    m = _with_users(tmp_path, log_file, path=str(tmp_path / "nope.parquet"))
    _expect(tmp_path, m, r"data\.pipeline\.side_tables\.users\.path: path .*nope\.parquet does not exist")


def test_side_table_misses_its_key(tmp_path, log_file):
    m = _with_users(tmp_path, log_file, _users().rename({"user_id": "uid"}))
    _expect(tmp_path, m, r"users\.parquet is missing column\(s\) 'user_id' \(data\.pipeline\.side_tables\.users\.on\)")


def test_side_table_misses_a_feature(tmp_path, log_file):
    m = _with_users(tmp_path, log_file, categorical=["segment", "country"])
    _expect(
        tmp_path,
        m,
        r"users\.parquet is missing column\(s\) 'country' \(data\.pipeline\.side_tables\.users\.categorical\)",
    )


def test_impressions_miss_the_side_table_key(tmp_path, log_file):
    m = _with_users(tmp_path, log_file, on="account_id")
    users = _users().rename({"user_id": "account_id"})
    users.write_parquet(tmp_path / "users.parquet")
    _expect(tmp_path, m, r"log\.parquet is missing column\(s\) 'account_id' \(data\.pipeline\.side_tables\.users\.on\)")


def test_side_table_duplicated_key(tmp_path, log_file):
    users = pl.concat([_users(), _users().slice(2, 1)])
    _expect(
        tmp_path, _with_users(tmp_path, log_file, users), r"users\.parquet has 2 rows with a duplicated key 'user_id'"
    )


def test_side_table_column_also_in_impressions(tmp_path, log_file):
    # the log's request_id column is read (as the request id); a side-table feature of that name would clash
    users = _users().with_columns(pl.lit(1).alias("request_id"))
    m = _with_users(tmp_path, log_file, users, categorical=["segment", "request_id"])
    _expect(
        tmp_path,
        m,
        r"column 'request_id' of side table .*users\.parquet \(data\.pipeline\.side_tables\.users\) is also read from the impression files",
    )


def test_no_key_matches(tmp_path, log_file):
    users = _users().with_columns(pl.col("user_id") + 100)
    _expect(
        tmp_path,
        _with_users(tmp_path, log_file, users),
        r"no impression of the \w+ split has a row in side table .*users\.parquet",
    )


def test_unmatched_keys_under_nan_policy_error(tmp_path, log_file):
    users = _users().filter(pl.col("user_id") != 7).with_columns(pl.col("followers").fill_null(1.0))
    m = _with_users(tmp_path, log_file, users)
    m["encoding"] = {"nan_policy": "error"}
    _expect(tmp_path, m, r"impression\(s\) have no row in side table .*users\.parquet .*nan_policy=error")


def test_float_categorical_with_fractions(tmp_path, log_file):
    users = _users().with_columns(pl.col("code") + 0.5)
    _expect(
        tmp_path,
        _with_users(tmp_path, log_file, users),
        r"categorical column 'code' in file .*users\.parquet is float with \d+ value\(s\) that are not whole numbers",
    )


def test_side_table_config_typo_and_missing_path(tmp_path, log_file):
    m = _with_users(tmp_path, log_file, categoricals=["segment"])
    with pytest.raises(
        DataValidationError, match=r"unknown config key\(s\) data\.pipeline\.side_tables\.users\.categoricals"
    ):
        PipelineConfig.from_mapping(m)
    m = _with_users(tmp_path, log_file)
    del m["side_tables"]["users"]["path"]
    with pytest.raises(DataValidationError, match=r"data\.pipeline\.side_tables\.users\.path is missing"):
        PipelineConfig.from_mapping(m)


def test_unparsable_time_strings(tmp_path):
    df = make_log().with_columns(pl.format("day {}", pl.col("timestamp")).alias("timestamp"))
    path = tmp_path / "log.csv"
    df.write_csv(path)
    _expect(
        tmp_path,
        pipeline_mapping(path),
        r"column 'timestamp' \(data\.pipeline\.columns\.time\) in file .*log\.csv has 200 value\(s\) that are not ISO dates.*'day 0'",
    )


def test_date_cut_point_on_plain_number_time(tmp_path, log_file):
    m = pipeline_mapping(log_file, split={"by": "time", "val_start": "2024-01-15", "test_start": "2024-01-18"})
    _expect(
        tmp_path,
        m,
        r"data\.pipeline\.split\.val_start = '2024-01-15' is a date, but the time column 'timestamp' holds plain numbers",
    )


def test_cut_points_out_of_order_and_half_given(tmp_path, log_file):
    with pytest.raises(
        DataValidationError,
        match=r"data\.pipeline\.split\.val_start = 300 is after data\.pipeline\.split\.test_start = 200",
    ):
        PipelineConfig.from_mapping(
            pipeline_mapping(log_file, split={"by": "time", "val_start": 300, "test_start": 200})
        )
    with pytest.raises(
        DataValidationError,
        match=r"data\.pipeline\.split\.val_start is not set but data\.pipeline\.split\.test_start is",
    ):
        PipelineConfig.from_mapping(pipeline_mapping(log_file, split={"by": "time", "test_start": 200}))
    with pytest.raises(DataValidationError, match=r"cut points in time but data\.pipeline\.split\.by = 'random'"):
        PipelineConfig.from_mapping(pipeline_mapping(log_file, split={"by": "random", "val_start": 1, "test_start": 2}))


def test_cut_point_past_the_data_empties_a_split(tmp_path, log_file):
    m = pipeline_mapping(log_file, split={"by": "time", "val_start": 300, "test_start": 10_000})
    _expect(tmp_path, m, r"the test split is empty after splitting; move data\.pipeline\.split\.test_start")


def test_bad_time_unit_and_zone(tmp_path, log_file):
    m = pipeline_mapping(log_file)
    m["columns"]["time_unit"] = "minutes"
    with pytest.raises(
        DataValidationError,
        match=r"data\.pipeline\.columns\.time_unit = 'minutes': expected one of \['s', 'ms', 'us', 'ns'\]",
    ):
        PipelineConfig.from_mapping(m)
    m = pipeline_mapping(log_file)
    m["columns"]["time_zone"] = "Mars/Olympus"
    with pytest.raises(
        DataValidationError, match=r"data\.pipeline\.columns\.time_zone = 'Mars/Olympus': expected an IANA time zone"
    ):
        PipelineConfig.from_mapping(m)


def test_split_file_with_another_schema_is_named(tmp_path):
    df = make_log()
    train, test = tmp_path / "train.parquet", tmp_path / "test_other.parquet"
    df.slice(0, 160).write_parquet(train)
    df.slice(160, 40).drop("price").write_parquet(test)
    m = pipeline_mapping(train, split_inputs={"test": [str(test)]})
    _expect(tmp_path, m, r"test_other\.parquet is missing column\(s\) 'price'")


def test_time_dtype_differs_between_files(tmp_path):
    df = make_log()
    train, test = tmp_path / "train.parquet", tmp_path / "test.csv"
    df.slice(0, 160).write_parquet(train)
    df.slice(160, 40).with_columns(pl.lit("2024-01-01").alias("timestamp")).write_csv(test)
    m = pipeline_mapping(train, split_inputs={"test": [str(test)]})
    _expect(
        tmp_path,
        m,
        r"the time column 'timestamp' \(data\.pipeline\.columns\.time\) has incompatible dtypes across files",
    )


def test_split_inputs_without_train_needs_inputs(tmp_path, log_file):
    m = pipeline_mapping([], split_inputs={"test": [str(log_file)]})
    with pytest.raises(DataValidationError, match=r"data\.pipeline\.split_inputs has keys \['test'\]"):
        PipelineConfig.from_mapping(m)


def test_task_names_that_cannot_name_a_head(tmp_path, log_file):
    m = pipeline_mapping(log_file, tasks=["save", "forward"])
    m["columns"]["labels"]["forward"] = "click"
    with pytest.raises(
        DataValidationError, match=r"task name\(s\) \['forward'\] cannot be used: .*attribute of torch\.nn\.Module"
    ):
        PipelineConfig.from_mapping(m)
