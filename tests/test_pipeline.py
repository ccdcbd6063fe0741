import json

import numpy as np
import polars as pl
import pytest

from conftest import TASKS, make_log, pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.downsample import downsample
from mtrank.data.pipeline import ProcessedData, process


def _load(processed: ProcessedData, split: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p, _ in processed.files(split)])


def test_vocabulary_oov_and_train_only_statistics(tmp_path, log_file):
    processed = process(PipelineConfig.from_mapping(pipeline_mapping(log_file)), tmp_path / "proc")
    raw = make_log()
    meta = processed.metadata
    train_req = set(_load(processed, "train")["request_id"].to_list())
    raw_train = raw.filter(pl.col("request_id").is_in(list(train_req)))
    # split by time: train holds the earliest 60% of requests
    assert max(train_req) < min(_load(processed, "val")["request_id"].to_list())
    assert max(_load(processed, "val")["request_id"].to_list()) < min(_load(processed, "test")["request_id"].to_list())
    # vocabulary: train values only, index 0 reserved for OOV
    vocab = pl.read_parquet(processed.directory / "vocab" / "item_id.parquet")
    assert set(vocab["value"].to_list()) == set(raw_train["item_id"].to_list())
    assert vocab["index"].min() == 1
    card = {f["name"]: f["cardinality"] for f in meta["features"]["categorical"]}
    assert card["item_id"] == vocab.height + 1
    # an item never seen in train is encoded as 0 in val/test
    unseen = set(raw["item_id"].to_list()) - set(raw_train["item_id"].to_list())
    test = pl.concat([_load(processed, "val"), _load(processed, "test")])
    if unseen:
        assert (test["cat__item_id"] == 0).sum() > 0
    assert (_load(processed, "train")["cat__item_id"] == 0).sum() == 0
    # numeric statistics from train only
    num = {f["name"]: f for f in meta["features"]["numeric"]}
    assert num["price"]["mean"] == pytest.approx(raw_train["price"].mean(), rel=1e-9)
    assert num["price"]["std"] == pytest.approx(raw_train["price"].std(), rel=1e-9)
    log_pop = np.log1p(raw_train["popularity"].to_numpy().astype(float))
    assert num["popularity"]["transform"] == "log1p"
    assert num["popularity"]["mean"] == pytest.approx(log_pop.mean(), rel=1e-9)
    tr = _load(processed, "train")
    assert tr["num__price"].mean() == pytest.approx(0.0, abs=1e-5)
    # labels: one per task, all rows kept with beta=1
    assert [c for c in tr.columns if c.startswith("label__")] == [f"label__{t}" for t in TASKS]
    assert sum(processed.rows(s) for s in ("train", "val", "test")) == raw.height


def test_downsampling_keeps_engaged_rows_and_counts(tmp_path):
    df = pl.DataFrame({f"label__{t}": np.zeros(10_000, dtype=np.uint8) for t in ("a", "b")})
    labels = np.zeros((10_000, 2), dtype=np.uint8)
    labels[:500, 0] = 1
    labels[400:1000, 1] = 1
    df = pl.DataFrame({"label__a": labels[:, 0], "label__b": labels[:, 1]})
    kept, counts = downsample(df, ["a", "b"], beta=0.1, seed=3)
    engaged = 1000
    assert counts["rows_before"] == 10_000
    assert counts["unengaged_before"] == 9000
    assert (kept["label__a"] + kept["label__b"] > 0).sum() == engaged  # every engaged row kept
    assert counts["unengaged_after"] == kept.height - engaged
    assert 0.08 < counts["unengaged_after"] / 9000 < 0.12
    a = counts["per_task"]["a"]
    assert a["positives_before"] == a["positives_after"] == 500
    # head a's negatives include the 500 rows engaged only with b, kept whole: its effective beta is above beta
    assert a["negatives_after"] == 500 + counts["unengaged_after"]
    assert a["effective_beta"] == pytest.approx(a["negatives_after"] / 9500)
    assert a["effective_beta"] > counts["unengaged_after"] / 9000
    kept2, _ = downsample(df, ["a", "b"], beta=0.1, seed=3)
    assert kept.equals(kept2)


def test_train_split_downsampled_val_test_untouched(tmp_path, log_file):
    m = pipeline_mapping(log_file, downsample={"beta": 0.3, "seed": 1})
    processed = process(PipelineConfig.from_mapping(m), tmp_path / "proc")
    c = processed.metadata["counts"]
    assert c["rows_after"] == processed.rows("train") < c["rows_before"]
    full = process(PipelineConfig.from_mapping(pipeline_mapping(log_file)), tmp_path / "proc2")
    assert processed.rows("val") == full.rows("val") and processed.rows("test") == full.rows("test")


def test_cache_reuses_and_config_change_reprocesses(tmp_path, log_file):
    cfg = PipelineConfig.from_mapping(pipeline_mapping(log_file))
    a = process(cfg, tmp_path / "proc")
    mtime = (a.directory / "metadata.json").stat().st_mtime_ns
    b = process(cfg, tmp_path / "proc")
    assert b.directory == a.directory and (b.directory / "metadata.json").stat().st_mtime_ns == mtime
    c = process(PipelineConfig.from_mapping(pipeline_mapping(log_file, downsample={"beta": 0.5})), tmp_path / "proc")
    assert c.directory != a.directory
    # content, not name or time, keys the cache: rewriting different data in the same file reprocesses
    make_log(seed=1).write_parquet(log_file)
    d = process(cfg, tmp_path / "proc")
    assert d.directory != a.directory


def test_split_by_request_keeps_requests_whole(tmp_path, log_file):
    processed = process(
        PipelineConfig.from_mapping(pipeline_mapping(log_file, split={"by": "request"})), tmp_path / "p"
    )
    ids = {s: set(_load(processed, s)["request_id"].to_list()) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    sizes = make_log().group_by("request_id").len()
    for s, reqs in ids.items():
        assert _load(processed, s).height == sizes.filter(pl.col("request_id").is_in(list(reqs)))["len"].sum()


def test_csv_input_and_explicit_split_files(tmp_path):
    df = make_log()
    paths = {}
    for s, part in (("train", df.slice(0, 120)), ("val", df.slice(120, 40)), ("test", df.slice(160, 40))):
        paths[s] = tmp_path / f"{s}.csv"
        part.write_csv(paths[s])
    m = pipeline_mapping([], split_inputs={s: [str(p)] for s, p in paths.items()})
    processed = process(PipelineConfig.from_mapping(m), tmp_path / "proc")
    assert (processed.rows("train"), processed.rows("val"), processed.rows("test")) == (120, 40, 40)
    assert (
        json.loads((processed.directory / "metadata.json").read_text())["features"]["categorical"][2]["dtype"]
        == "String"
    )


def test_nan_policy_fill_mean_is_counted_and_warned(tmp_path, caplog):
    df = make_log().with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("price")).alias("price")
    )
    path = tmp_path / "nan.parquet"
    df.write_parquet(path)
    with caplog.at_level("WARNING"):
        processed = process(PipelineConfig.from_mapping(pipeline_mapping(path)), tmp_path / "proc")
    n_null = df["price"].null_count()
    assert processed.metadata["numeric_missing_filled"]["price"] == n_null > 0
    assert "price" in caplog.text and "fill_mean" in caplog.text
    tr = _load(processed, "train")
    assert tr["num__price"].null_count() == 0 and tr["num__price"].is_nan().sum() == 0


# --------------------------------------------------------------------------------------------- streamed build


def _shard_bytes(processed: ProcessedData) -> dict[str, bytes]:
    return {
        str(p.relative_to(processed.directory)): p.read_bytes()
        for s in ("train", "val", "test")
        for p, _ in processed.files(s)
    }


def test_same_config_twice_gives_identical_shards(tmp_path, log_file):
    cfg = PipelineConfig.from_mapping(pipeline_mapping(log_file, downsample={"beta": 0.5, "seed": 4}))
    a = process(cfg, tmp_path / "a")
    b = process(cfg, tmp_path / "b")
    assert _shard_bytes(a) == _shard_bytes(b)
    assert a.metadata["features"] == b.metadata["features"] and a.metadata["counts"] == b.metadata["counts"]
    # another seed shuffles (and downsamples) differently
    c = process(
        PipelineConfig.from_mapping(pipeline_mapping(log_file, downsample={"beta": 0.5, "seed": 5})), tmp_path / "c"
    )
    assert _load(a, "train")["request_id"].to_list() != _load(c, "train")["request_id"].to_list()


def test_shuffle_buckets_and_the_one_pass_sink_do_not_change_the_output(tmp_path, log_file, monkeypatch):
    """Train is shuffled in buckets of at most SHUFFLE_ROWS rows by ranges of its shuffle key, so the order does not
    depend on their number; without Polars' partitioned sink the per-split sinks give the same files."""
    import mtrank.data.shards as shards

    cfg = PipelineConfig.from_mapping(pipeline_mapping(log_file))
    one = process(cfg, tmp_path / "one")
    monkeypatch.setattr(shards, "SHUFFLE_ROWS", 37)
    many = process(cfg, tmp_path / "many")
    assert _shard_bytes(many) == _shard_bytes(one)
    monkeypatch.delattr(pl, "PartitionBy", raising=False)
    fallback = process(cfg, tmp_path / "fallback")
    assert _shard_bytes(fallback) == _shard_bytes(one)


def test_shards_sizes_order_and_tallies(tmp_path, log_file):
    processed = process(PipelineConfig.from_mapping(pipeline_mapping(log_file, rows_per_shard=24)), tmp_path / "p")
    raw = make_log()
    for s in ("train", "val", "test"):
        sizes = [n for _, n in processed.files(s)]
        assert all(n == 24 for n in sizes[:-1]) and 0 < sizes[-1] <= 24 and sum(sizes) == processed.rows(s)
        df = _load(processed, s)
        meta = processed.metadata["splits"][s]
        assert meta["positives"] == {t: int(df[f"label__{t}"].sum()) for t in TASKS}
        assert meta["oov"] == {c: int((df[f"cat__{c}"] == 0).sum()) for c in ("user_id", "item_id", "category")}
    # val / test keep the input order; train is a permutation of its rows
    for s in ("val", "test"):
        df = _load(processed, s)
        expected = raw.filter(pl.col("request_id").is_in(df["request_id"].unique().implode()))
        assert df["request_id"].to_list() == expected["request_id"].to_list()
        assert df["item_id"].to_list() == expected["item_id"].to_list()
    train = _load(processed, "train")
    assert train["request_id"].to_list() != sorted(train["request_id"].to_list())


def test_time_fractions_without_request_ids_rank_rows_by_time(tmp_path, log_file):
    """No request id: every impression is its own request; ties in time are broken by row order."""
    m = pipeline_mapping(log_file)
    m["columns"] = {**m["columns"], "request_id": None}
    processed = process(PipelineConfig.from_mapping(m), tmp_path / "p")
    n = make_log().height  # rows are in time order, four per timestamp
    train_end, val_end = (
        1.0 - 0.2 - 0.2,
        1.0 - 0.2,
    )  # rank / n below these (as floats, as data.pipeline.split reads them)
    expected = {
        "train": [r for r in range(n) if r / n < train_end],
        "val": [r for r in range(n) if train_end <= r / n < val_end],
        "test": [r for r in range(n) if r / n >= val_end],
    }
    for s, rows in expected.items():
        assert sorted(_load(processed, s)["request_id"].to_list()) == rows  # request_id is the row number


def test_downsampled_train_matches_counts(tmp_path, log_file):
    processed = process(
        PipelineConfig.from_mapping(pipeline_mapping(log_file, downsample={"beta": 0.2})), tmp_path / "p"
    )
    c = processed.metadata["counts"]
    train = _load(processed, "train")
    assert train.height == c["rows_after"] == processed.rows("train")
    engaged = pl.any_horizontal([pl.col(f"label__{t}") > 0 for t in TASKS])
    assert train.filter(~engaged).height == c["unengaged_after"]
    for t in TASKS:
        assert (
            int(train[f"label__{t}"].sum())
            == c["per_task"][t]["positives_after"]
            == c["per_task"][t]["positives_before"]
        )


# --------------------------------------------------------------------------------------------- duplicates, OOV


def _with_copies(tmp_path, name="dup.parquet"):
    df = make_log()
    dup = pl.concat([df, df.slice(0, 8)]).sort("request_id", maintain_order=True)
    path = tmp_path / name
    dup.write_parquet(path)
    return df, dup, path


def test_duplicates_drop_policy_drops_and_warns(tmp_path, caplog):
    df, dup, path = _with_copies(tmp_path)
    with caplog.at_level("WARNING"):
        processed = process(
            PipelineConfig.from_mapping(pipeline_mapping(path, duplicates={"policy": "drop"})), tmp_path / "p"
        )
    meta = processed.metadata["duplicate_rows"]
    assert meta["total"] == meta["dropped"] == 8 and meta["policy"] == "drop" and not meta["kept"]
    assert sum(processed.rows(s) for s in ("train", "val", "test")) == df.height == dup.height - 8
    assert "DROPPED" in caplog.text and "dup.parquet" in caplog.text
    # the kept rows are the same as in the file without the copies
    clean = tmp_path / "clean.parquet"
    df.write_parquet(clean)
    ref = process(PipelineConfig.from_mapping(pipeline_mapping(clean)), tmp_path / "ref")
    for s in ("val", "test"):
        assert _load(processed, s).equals(_load(ref, s))


def test_duplicates_across_files_and_by_key(tmp_path, caplog):
    df = make_log()
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    df.slice(0, 120).write_parquet(a)
    df.slice(100, 100).write_parquet(b)  # its first 20 rows repeat the last 20 of a.parquet
    with caplog.at_level("WARNING"):
        processed = process(PipelineConfig.from_mapping(pipeline_mapping([a, b])), tmp_path / "p")
    assert processed.metadata["duplicate_rows"]["files"] == {str(a): 0, str(b): 20}
    assert "KEPT" in caplog.text
    # by key: an impression shown twice in a request with other labels is a duplicate of the key, not of the row
    twice = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.col("item_id").first())
        .otherwise(pl.col("item_id"))
        .alias("item_id")
    )
    twice = twice.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(1 - pl.col("click")).otherwise(pl.col("click")).alias("click")
    )
    path = tmp_path / "twice.parquet"
    twice.write_parquet(path)
    by_row = process(PipelineConfig.from_mapping(pipeline_mapping(path)), tmp_path / "q")
    by_key = process(
        PipelineConfig.from_mapping(pipeline_mapping(path, duplicates={"key": ["request_id", "item_id"]})),
        tmp_path / "q",
    )
    per_request = (
        twice.group_by("request_id", "item_id").len().filter(pl.col("len") > 1)["len"].sum()
        - twice.group_by("request_id", "item_id").len().filter(pl.col("len") > 1).height
    )
    assert by_row.metadata["duplicate_rows"]["total"] == 0
    assert by_key.metadata["duplicate_rows"]["total"] == per_request >= 1
    assert by_key.metadata["duplicate_rows"]["key"] == ["request_id", "item_id"]


def test_oov_fraction_is_logged_and_limited(tmp_path, caplog):
    # items of the last 15 requests are new: val / test show items train never saw
    df = make_log().with_columns(
        pl.when(pl.col("request_id") >= 35).then(pl.col("item_id") + 100).otherwise(pl.col("item_id")).alias("item_id")
    )
    log_file = tmp_path / "log.parquet"
    df.write_parquet(log_file)
    with caplog.at_level("INFO", logger="mtrank.data.build_checks"):
        processed = process(PipelineConfig.from_mapping(pipeline_mapping(log_file)), tmp_path / "p")
    assert "Out-of-vocabulary fraction per categorical column in the test split" in caplog.text
    frac = max(processed.metadata["splits"][s]["oov"]["item_id"] / processed.rows(s) for s in ("val", "test"))
    assert frac == 1.0
    ok = pipeline_mapping(log_file, encoding={"max_oov_fraction": frac})
    process(PipelineConfig.from_mapping(ok), tmp_path / "ok")
    from mtrank.data.errors import DataValidationError

    with pytest.raises(
        DataValidationError,
        match=r"categorical column 'item_id' .* maps 100\.0% of the test split .* "
        r"expected at most data\.pipeline\.encoding\.max_oov_fraction=0\.4 \(also over: 'item_id' in val: 55\.6%\)",
    ):
        process(
            PipelineConfig.from_mapping(pipeline_mapping(log_file, encoding={"max_oov_fraction": 0.4})), tmp_path / "no"
        )


def test_no_positive_in_val_is_warned(tmp_path, caplog):
    df = make_log().with_columns(
        pl.when(pl.col("request_id") >= 30).then(0).otherwise(pl.col("save")).cast(pl.Int8).alias("save")
    )
    path = tmp_path / "log.parquet"
    df.write_parquet(path)
    with caplog.at_level("WARNING"):
        process(PipelineConfig.from_mapping(pipeline_mapping(path)), tmp_path / "p")
    assert "Task 'save' (label column 'save') has no positive label in the val, test split(s)" in caplog.text
