"""Tests for the synthetic engagement-log simulator (small worlds, a few seconds in all)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from mtrank.data.simulator import RNG_BLOCK, ROW_GROUP_ROWS, generate_logs, iter_log, simulate, write_logs
from mtrank.data.simulator_config import TASKS, SimulatorConfig
from mtrank.data.world import World

SMALL = dict(n_impressions=20_000, n_users=2_000, n_queries=500, n_products=2_000, n_files=4)


@pytest.fixture(scope="module")
def cfg() -> SimulatorConfig:
    return SimulatorConfig(**SMALL)


@pytest.fixture(scope="module")
def log(cfg) -> pl.DataFrame:
    return simulate(cfg)


@pytest.fixture(scope="module")
def big_log() -> pl.DataFrame:
    return simulate(SimulatorConfig(**{**SMALL, "n_impressions": 200_000, "seed": 3}))


def test_schema_and_size(log, cfg):
    expected = {
        "request_id": pl.Int64,
        "timestamp": pl.Int64,
        "user_id": pl.Int64,
        "query_id": pl.Int64,
        "candidate_id": pl.Int64,
        "position": pl.Int32,
        "user_segment": pl.Int32,
        "user_activity": pl.Int64,
        "query_category": pl.Int32,
        "candidate_category": pl.Int32,
        "price": pl.Float64,
        "candidate_popularity": pl.Int64,
        "retrieval_score": pl.Float64,
        **{t: pl.Int8 for t in TASKS},
        **{f"p_true_{t}": pl.Float64 for t in TASKS},
    }
    assert dict(log.schema) == expected
    assert list(log.columns) == list(expected)
    k = cfg.candidates_per_request
    assert log.height == (cfg.n_impressions // k) * k
    # sorted by time, then request, then position; whole requests with positions 0..K-1
    assert log.equals(log.sort(["timestamp", "request_id", "position"]))
    per_req = log.group_by("request_id").agg(
        pl.len(), pl.col("position").min().alias("lo"), pl.col("position").max().alias("hi")
    )
    assert (per_req["len"] == k).all() and (per_req["lo"] == 0).all() and (per_req["hi"] == k - 1).all()
    # ranked by retrieval_score within a request
    ranked = log.with_columns(pl.col("retrieval_score").diff().over("request_id").alias("d"))
    assert (ranked["d"].drop_nulls() <= 0).all()
    assert log["timestamp"].min() >= 1_767_225_600
    assert log["timestamp"].max() < 1_767_225_600 + cfg.n_days * 86_400


def test_determinism(cfg, log):
    assert simulate(cfg).equals(log)
    other = simulate(SimulatorConfig(**{**SMALL, "seed": 1}))
    assert not other.equals(log)


def test_label_logic(big_log):
    d = big_log
    assert (d["long_click"] <= d["click"]).all()
    assert (d["checkout"] <= d["click"]).all()
    hidden = d.filter(pl.col("hide") == 1)
    assert hidden.height > 0
    for t in ("save", "click", "long_click", "closeup", "checkout"):
        assert (hidden[t] == 0).all(), t
    # positive types co-occur on one impression
    assert d.filter((pl.col("save") == 1) & (pl.col("long_click") == 1)).height > 0
    assert d.filter((pl.col("closeup") == 1) & (pl.col("click") == 1)).height > 0


def test_p_true_consistent_with_labels(big_log):
    d = big_log
    for t in TASKS:
        p = d[f"p_true_{t}"].to_numpy()
        y = d[t].to_numpy()
        assert np.all((p >= 0) & (p <= 1)), t
        se = np.sqrt(np.sum(p * (1 - p))) / len(p)
        assert abs(y.mean() - p.mean()) < 5 * se + 1e-4, (t, y.mean(), p.mean())
    assert (d["p_true_long_click"] <= d["p_true_click"]).all()
    assert (d["p_true_checkout"] <= d["p_true_click"]).all()


def test_positive_rate_bands(big_log):
    rates = {t: big_log[t].mean() for t in TASKS}
    assert 0.01 <= rates["click"] <= 0.08, rates
    assert rates["checkout"] < 0.01 and rates["hide"] < 0.01, rates
    assert 0.005 <= rates["save"] <= 0.05 and 0.01 <= rates["closeup"] <= 0.08, rates
    assert 0.002 <= rates["long_click"] < rates["click"], rates
    assert rates["checkout"] > 0 and rates["hide"] > 0, rates


def test_position_bias(big_log):
    by_pos = big_log.group_by("position").agg(pl.col("p_true_click").mean()).sort("position")
    m = by_pos["p_true_click"].to_numpy()
    assert m[0] > m[-1]
    assert np.all(np.diff(m) < 0)


def test_true_probabilities_recompute_positions(cfg, log):
    world = World.build(cfg)
    base = world.true_probabilities(log)
    for t in TASKS:  # the written columns are exactly the model's probabilities
        np.testing.assert_array_equal(base[t], log[f"p_true_{t}"].to_numpy())
    rng = np.random.default_rng(0)
    perm_pos = log.with_columns(
        pl.Series("position", rng.permutation(log.height) % cfg.candidates_per_request, dtype=pl.Int32)
    )
    new = world.true_probabilities(perm_pos)
    changed = perm_pos["position"].to_numpy() != log["position"].to_numpy()
    assert changed.any() and (~changed).any()
    for t in ("click", "save", "closeup", "hide"):
        assert np.array_equal(new[t][~changed], base[t][~changed]), t
        assert np.all(new[t][changed] != base[t][changed]), t
    # a frame with only the required columns works too
    slim = log.select("user_id", "query_id", "candidate_id", "position")
    np.testing.assert_array_equal(world.true_probabilities(slim)["click"], base["click"])


def test_draw_labels_and_sample_requests(cfg):
    world = World.build(cfg)
    frame = world.sample_requests(50, np.random.default_rng(1), start_request_id=100)
    assert frame.height == 50 * cfg.candidates_per_request
    assert frame["request_id"].min() == 100 and frame["request_id"].max() == 149
    assert not any(t in frame.columns for t in TASKS)
    labelled = world.draw_labels(frame, np.random.default_rng(2))
    assert labelled.columns == frame.columns + list(TASKS) + [f"p_true_{t}" for t in TASKS]
    assert all(labelled[t].dtype == pl.Int8 for t in TASKS)
    # no duplicate candidates within a request
    assert (
        frame.group_by("request_id").agg(pl.col("candidate_id").n_unique())["candidate_id"].min()
        == cfg.candidates_per_request
    )


def test_write_logs(tmp_path, log, cfg):
    out = tmp_path / "logs"
    files = write_logs(log, out, 4, cfg=cfg)
    assert [f.name for f in files] == [f"impressions-{i:05d}.parquet" for i in range(4)]
    assert (out / "simulator_config.json").is_file()
    parts = [pl.read_parquet(f) for f in files]
    assert all(p.height > 0 for p in parts)
    assert pl.concat(parts).equals(log)
    req_sets = [set(p["request_id"].to_list()) for p in parts]
    for i in range(len(req_sets)):
        for j in range(i + 1, len(req_sets)):
            assert not req_sets[i] & req_sets[j]
    for a, b in zip(parts, parts[1:]):
        assert a["timestamp"].max() <= b["timestamp"].min()
    with pytest.raises(FileExistsError, match="logs"):
        write_logs(log, out, 4)
    # an existing empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_logs(log, empty, 2)) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_generate_logs_reuses(tmp_path, cfg):
    out = tmp_path / "gen"
    files = generate_logs(cfg, out)
    assert len(files) == cfg.n_files
    meta = json.loads((out / "simulator_config.json").read_text())
    assert meta["config"]["seed"] == cfg.seed
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = generate_logs(cfg, out)
    assert again == files and [f.stat().st_mtime_ns for f in again] == mtimes
    with pytest.raises(FileExistsError):
        generate_logs(SimulatorConfig(**{**SMALL, "seed": 9}), out)


def test_streamed_generation_does_not_depend_on_the_chunk_size(tmp_path):
    """generate_logs writes the log chunk by chunk: the files are byte-identical for any chunk size, hold whole
    requests in time order, and their rows are the in-memory log's."""
    cfg = SimulatorConfig(**{**SMALL, "n_impressions": 3 * RNG_BLOCK * 20 + 400, "n_files": 3})
    small = generate_logs(cfg, tmp_path / "small", chunk_requests=1)  # one random-stream block at a time
    large = generate_logs(cfg, tmp_path / "large", chunk_requests=10 * RNG_BLOCK)  # everything at once
    assert [f.read_bytes() for f in small] == [f.read_bytes() for f in large]
    whole = simulate(cfg)
    parts = [pl.read_parquet(f) for f in small]
    assert pl.concat(parts).equals(whole)
    assert whole["request_id"].to_list() == sorted(whole["request_id"].to_list())
    assert whole["timestamp"].is_sorted() and whole["request_id"].n_unique() == cfg.n_requests
    assert abs(parts[0].height - parts[-1].height) <= cfg.candidates_per_request  # about equal files
    chunks = list(iter_log(cfg, chunk_requests=RNG_BLOCK))
    assert len(chunks) == 4 and pl.concat(chunks).equals(whole)


def test_written_files_have_fixed_row_groups(tmp_path):
    import pyarrow.parquet as pq

    cfg = SimulatorConfig(**{**SMALL, "n_impressions": 2 * ROW_GROUP_ROWS + 1000, "n_files": 1, "n_users": 500})
    (path,) = generate_logs(cfg, tmp_path / "one", chunk_requests=3000)
    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [ROW_GROUP_ROWS] * (len(sizes) - 1) and sum(sizes) == cfg.n_requests * 20


def test_from_mapping():
    c = SimulatorConfig.from_mapping({"seed": 5, "n_impressions": 1000, "base_logits": {"click": -3.0}})
    assert c.seed == 5 and c.n_impressions == 1000
    assert c.base_logits["click"] == -3.0 and set(c.base_logits) == set(TASKS)
    assert SimulatorConfig.from_mapping({}) == SimulatorConfig()
    with pytest.raises(ValueError, match="bogus_key"):
        SimulatorConfig.from_mapping({"seed": 1, "bogus_key": 3})
    with pytest.raises(ValueError, match="not_a_task"):
        SimulatorConfig.from_mapping({"base_logits": {"not_a_task": 0.0}})
