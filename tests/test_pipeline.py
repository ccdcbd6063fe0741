import json

import numpy as np
import polars as pl
import pytest

from conftest import TASKS, make_log, pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.pipeline import ProcessedData, downsample, process


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
    processed = process(PipelineConfig.from_mapping(pipeline_mapping(log_file, split={"by": "request"})), tmp_path / "p")
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
    assert json.loads((processed.directory / "metadata.json").read_text())["features"]["categorical"][2]["dtype"] == "String"


def test_nan_policy_fill_mean_is_counted_and_warned(tmp_path, caplog):
    df = make_log().with_columns(pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("price")).alias("price"))
    path = tmp_path / "nan.parquet"
    df.write_parquet(path)
    with caplog.at_level("WARNING"):
        processed = process(PipelineConfig.from_mapping(pipeline_mapping(path)), tmp_path / "proc")
    n_null = df["price"].null_count()
    assert processed.metadata["numeric_missing_filled"]["price"] == n_null > 0
    assert "price" in caplog.text and "fill_mean" in caplog.text
    tr = _load(processed, "train")
    assert tr["num__price"].null_count() == 0 and tr["num__price"].is_nan().sum() == 0
