"""Worlds: the interface both the built-in and the fitted world satisfy, the fitted world's config, retrieval and
cache, and (slow) the world fitted to KuaiRand-Pure end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import compose_config
from mtrank.data.simulator_config import SimulatorConfig
from mtrank.data.world import World
from mtrank.data.world_api import RankingWorld
from mtrank.errors import ConfigError
from mtrank.worlds.catalogue import Catalogue, distinct_first_k
from mtrank.worlds.config import FittedWorldConfig, world_kind
from mtrank.worlds.fitted import FittedWorld, position_effect, unique_rows
from mtrank.worlds.logs import cached_world_log
from mtrank.worlds.response import FIT_FILE, ensure_fitted

ROOT = Path(__file__).resolve().parents[1]
KUAIRAND = ROOT.parent / "shared" / "data" / "kuairand_pure"
TASKS = ("save", "click", "long_click", "closeup", "hide")


def world_mapping(tmp: Path, log_file: Path, tables: list[str] | None = None, **requests) -> dict:
    return {
        "kind": "fitted",
        "name": "toy_fitted",
        "data_config": "kuairand_fitted",
        "cache_dir": str(tmp / "worlds"),
        "source": {
            "log": str(log_file),
            "tables": tables or [],
            "user": "user_id",
            "item": "video_id",
            "time": "time_ms",
            "context": ["tab"],
            "item_columns": ["duration_ms"],
        },
        "response": {
            "experiment": "kuairand",
            "overrides": ["model=logistic"],
            "eval_overrides": [],
            "world_overrides": [],
            "tasks": list(TASKS),
        },
        "position_bias": {"save": 0.35, "click": 0.55, "long_click": 0.55, "closeup": 0.45, "hide": 0.25},
        "requests": {"candidates_per_request": 8, "history_fraction": 0.25, "retrieval_noise": 1.0, **requests},
        "log": {"n_requests": 40, "n_files": 2, "seed": 0},
    }


def toy_log(n: int = 3_000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    video = rng.zipf(1.6, n) % 300
    return pl.DataFrame(
        {
            "user_id": (rng.zipf(1.8, n) % 400).astype(np.int32),
            "video_id": video.astype(np.int32),
            "time_ms": np.sort(rng.integers(1_650_000_000_000, 1_650_500_000_000, n)),
            "tab": rng.integers(0, 4, n).astype(np.int8),
            "duration_ms": (video * 1000 + 5000).astype(np.int64),
        }
    )


class ToyResponse:
    """A fixed function of (user, video, tab) per task: stands in for the fitted model."""

    tasks = TASKS

    def probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        u, v, t = (frame.get_column(c).to_numpy().astype(np.int64) for c in ("user_id", "video_id", "tab"))
        return {task: 0.02 + 0.9 * ((u * 31 + v * 17 + t * 7 + 13 * i) % 101) / 101 for i, task in enumerate(TASKS)}


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory) -> FittedWorld:
    tmp = tmp_path_factory.mktemp("toy_world")
    log = toy_log()
    path = tmp / "log.parquet"
    log.write_parquet(path)
    cfg = FittedWorldConfig.from_mapping(world_mapping(tmp, path))
    cat = Catalogue.from_log(log, cfg.user, cfg.item, cfg.time, cfg.context, cfg.item_columns)
    return FittedWorld(cfg, cat, ToyResponse(), info={"response_model": str(tmp / "response")})


@pytest.fixture(scope="module")
def builtin_world() -> World:
    return World.build(SimulatorConfig(seed=3, n_impressions=20_000, n_users=3_000, n_queries=300, n_products=2_000))


@pytest.fixture(params=["builtin", "fitted"])
def any_world(request, builtin_world, toy_world) -> RankingWorld:
    return builtin_world if request.param == "builtin" else toy_world


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ the interface, on both worlds
def test_both_worlds_implement_the_interface(any_world):
    assert isinstance(any_world, RankingWorld)
    frame = any_world.sample_requests(50, _rng(0), start_request_id=1000)
    K = any_world.candidates_per_request
    assert frame.height == 50 * K
    assert frame["request_id"].min() == 1000 and frame["request_id"].max() == 1049
    per_request = frame.group_by("request_id").agg(pl.col("position").sort())
    assert all(list(p) == list(range(K)) for p in per_request["position"])
    item = "video_id" if "video_id" in frame.columns else "candidate_id"
    assert frame.group_by("request_id").agg(pl.col(item).n_unique())[item].min() == K  # distinct candidates
    json.dumps(any_world.describe())


def test_labels_are_drawn_from_p_true_in_unit_interval(any_world):
    frame = any_world.draw_labels(any_world.sample_requests(2_000, _rng(1)), _rng(2))
    for t in any_world.tasks:
        p = frame[f"p_true_{t}"].to_numpy()
        y = frame[t].to_numpy()
        assert frame.schema[t] == pl.Int8 and set(np.unique(y)) <= {0, 1}
        assert np.all((p >= 0) & (p <= 1))
        # labels are Bernoulli(p): the mean label is within 5 standard errors of the mean probability
        se = np.sqrt(np.sum(p * (1 - p))) / len(p)
        assert abs(y.mean() - p.mean()) <= 5 * se + 1e-9, t


def test_position_effect_is_monotone(any_world):
    frame = any_world.sample_requests(300, _rng(3))
    at = {
        pos: any_world.true_probabilities(frame.with_columns(pl.lit(pos, dtype=pl.Int32).alias("position")))
        for pos in (0, 3, 9)
    }
    for t in any_world.tasks:
        assert np.all(at[3][t] <= at[0][t] + 1e-12) and np.all(at[9][t] <= at[3][t] + 1e-12), t
    assert any(np.all(at[9][t] < at[0][t]) for t in any_world.tasks)


def test_same_seed_same_output_other_seed_other_output(any_world):
    def draw(seed):
        return any_world.draw_labels(any_world.sample_requests(100, _rng(seed)), _rng(seed + 100))

    assert draw(5).equals(draw(5))
    assert not draw(5).equals(draw(6))


# ------------------------------------------------------------------ the fitted world's parts
def test_position_effect_keeps_position_zero_and_is_a_logit_shift():
    p = np.array([0.01, 0.3, 0.9])
    np.testing.assert_allclose(position_effect(p, np.zeros(3), 0.5), p)
    q = position_effect(p, np.full(3, 4.0), 0.5)
    logit = np.log(p / (1 - p)) - 0.5 * np.log1p(4.0)
    np.testing.assert_allclose(q, 1 / (1 + np.exp(-logit)))


def test_unique_rows_round_trip_with_nulls():
    frame = pl.DataFrame({"a": [1, 2, 1, None, None, 2], "b": ["x", "y", "x", "z", "z", "q"]})
    uniq, inverse = unique_rows(frame)
    assert uniq.height == 4 and uniq[inverse].equals(frame)


def test_distinct_first_k_keeps_order_and_flags_short_rows():
    props = np.array([[3, 3, 1, 2, 1, 5], [4, 4, 4, 4, 4, 2]])
    out, ok = distinct_first_k(props, 3)
    assert ok.tolist() == [True, False]
    assert out[0].tolist() == [3, 1, 2]


def test_retrieval_uses_the_users_history(toy_world):
    cat = toy_world.catalogue
    ctx = np.arange(200)
    only_hist, _ = cat.retrieve(ctx, 1, 1.0, 0.0, _rng(0))
    users = cat.context_user[ctx]
    for u, item in zip(users, only_hist[:, 0]):
        assert item in cat.hist_items[cat.hist_ptr[u] : cat.hist_ptr[u + 1]]
    # a user whose history is shorter than K still gets K distinct candidates (popularity fills in)
    cand, score = cat.retrieve(ctx, 8, 1.0, 0.5, _rng(1))
    assert all(len(set(r)) == 8 for r in cand.tolist())
    assert np.all(np.diff(score, axis=1) <= 0)  # retrieval order


def test_a_bad_world_key_is_a_config_error_naming_it(tmp_path):
    m = world_mapping(tmp_path, tmp_path / "log.parquet")
    m["requests"]["histroy_fraction"] = 0.5
    m["position_bias"].pop("hide")
    m["log"]["n_files"] = 0
    with pytest.raises(ConfigError) as e:
        FittedWorldConfig.from_mapping(m)
    keys = e.value.keys
    assert "world.requests.histroy_fraction" in keys and "world.position_bias" in keys and "world.log.n_files" in keys
    assert "did you mean 'history_fraction'" in str(e.value)
    with pytest.raises(ConfigError, match=r"world.kind = 'fited'"):
        world_kind({"kind": "fited"})
    assert world_kind(None) == "simulated"


def test_the_shipped_world_configs_compose_and_check(tmp_path):
    cfg = compose_config("simulate_ab", ["world=kuairand_fitted"], tmp_path)
    from omegaconf import OmegaConf

    c = FittedWorldConfig.from_mapping(OmegaConf.to_container(cfg.world, resolve=True))
    assert c.tasks == TASKS and c.log_file.endswith("interactions_20220425_20220430.parquet")
    assert any(o.startswith("data.pipeline.split_inputs.test=[") for o in c.world_overrides)
    assert compose_config("simulate_ab", [], tmp_path).world.kind == "simulated"
    assert compose_config("generate", ["world=kuairand_fitted"], tmp_path).world.kind == "fitted"
    # world=fitted (the name) is the same world, with the same name and therefore the same cache
    assert compose_config("simulate_ab", ["world=fitted"], tmp_path).world == cfg.world


def test_generate_names_a_bad_world_key_before_fitting_anything(tmp_path):
    import subprocess
    import sys

    cmd = [
        sys.executable,
        str(ROOT / "src" / "generate.py"),
        "world=kuairand_fitted",
        "+world.requests.histroy_fraction=0.5",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "world.requests.histroy_fraction" in out.stderr and "did you mean 'history_fraction'" in out.stderr
    assert not (tmp_path / "data" / "worlds").exists()


def _fake_trainer(calls: list):
    def trainer(experiment, overrides, data_dir, run_dir, log_file):
        calls.append((experiment, list(overrides)))
        run_dir.mkdir(parents=True)
        metrics = {f"test/{t}/{q}": 0.5 for t in TASKS for q in ("auroc", "pr_auc", "ece", "logloss", "n_pos")}
        (run_dir / "metrics.json").write_text(json.dumps({"metrics": metrics}))

    return trainer


def test_the_response_model_is_fitted_once_and_refitted_when_an_input_changes(tmp_path):
    path = tmp_path / "log.parquet"
    toy_log().write_parquet(path)
    cfg = FittedWorldConfig.from_mapping(world_mapping(tmp_path, path))
    calls: list = []
    first = ensure_fitted(cfg, tmp_path / "data", _fake_trainer(calls))
    assert len(calls) == 2 and (first / FIT_FILE).is_file() and (first / "eval").is_dir() and (first / "world").is_dir()
    assert ensure_fitted(cfg, tmp_path / "data", _fake_trainer(calls)) == first and len(calls) == 2  # loaded
    toy_log(seed=1).write_parquet(path)  # the same file, other content
    second = ensure_fitted(cfg, tmp_path / "data", _fake_trainer(calls))
    assert second != first and len(calls) == 4
    m = world_mapping(tmp_path, path)
    m["response"]["overrides"] = ["model=shared_bottom"]
    ensure_fitted(FittedWorldConfig.from_mapping(m), tmp_path / "data", _fake_trainer(calls))
    assert len(calls) == 6


def test_the_worlds_log_is_written_once_and_reproducible(toy_world, tmp_path):
    a = cached_world_log(toy_world, 40, 2, 0, tmp_path / "a", "k")
    files = sorted(a.glob("*.parquet"))
    assert len(files) == 2
    log = pl.concat([pl.read_parquet(f) for f in files])
    assert log.height == 40 * toy_world.candidates_per_request and log["request_id"].n_unique() == 40
    assert {f"p_true_{t}" for t in TASKS} <= set(log.columns)
    mtime = files[0].stat().st_mtime_ns
    assert cached_world_log(toy_world, 40, 2, 0, tmp_path / "a", "k") == a and files[0].stat().st_mtime_ns == mtime
    b = cached_world_log(toy_world, 40, 2, 0, tmp_path / "b", "k")
    assert pl.concat([pl.read_parquet(f) for f in sorted(b.glob("*.parquet"))]).equals(log)


# ------------------------------------------------------------------ the world fitted to KuaiRand-Pure (slow)
@pytest.mark.slow
@pytest.mark.skipif(not KUAIRAND.is_dir(), reason="KuaiRand-Pure is not in ../shared/data")
def test_kuairand_fitted_world_end_to_end(tmp_path):
    """Fit the response model (two logistic runs), draw a small log, train the two policies on it for an epoch and
    run a tiny simulate_ab on the fitted world: Table 1, the diagnostic arms, online BO, the final comparison."""
    from omegaconf import open_dict

    from mtrank.online.job import simulate_ab

    cfg = compose_config(
        "simulate_ab",
        [
            "world=kuairand_fitted",
            "ab=tiny",
            "world.log.n_requests=1500",
            "world.log.n_files=2",
            'models.train_overrides=["trainer.max_epochs=1","trainer.enable_progress_bar=false"]',
        ],
        tmp_path,
    )
    with open_dict(cfg):
        cfg.models.cache_dir = str(tmp_path / "cache")
        cfg.world.cache_dir = str(tmp_path / "worlds")
    res = simulate_ab(cfg)
    world = res["world"]
    assert world["kind"] == "fitted" and set(world["fit"]["held_out"]) == set(TASKS)
    assert world["fit"]["held_out"]["click"]["auroc"] > 0.65  # a held-out day of the real log
    assert set(res["table1"]["arms"]) == {"control", "treatment", "treatment_iw", "oracle_hand_picked"}
    assert (tmp_path / "run" / "report.md").is_file()
    # the second build reuses the fitted response model and the log
    folder = Path(world["response_model"])
    stamp = (folder / FIT_FILE).stat().st_mtime_ns
    from omegaconf import OmegaConf

    from mtrank.worlds.build import build_fitted_world

    again = build_fitted_world(OmegaConf.to_container(cfg.world, resolve=True), cfg.paths.data_dir)
    assert str(again.info["response_model"]) == str(folder) and (folder / FIT_FILE).stat().st_mtime_ns == stamp
    # the response model scores rows in their order
    frame = again.sample_requests(200, np.random.default_rng(0))
    p = again.true_probabilities(frame)
    rev = again.true_probabilities(frame.reverse())
    np.testing.assert_allclose(p["click"][::-1], rev["click"])
