"""mtrank.online: arms by user, CI arithmetic, position bias, reproducibility, online BO, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf

from helpers import FAST_RUN, compose_config
from mtrank.data.simulator_config import SimulatorConfig
from mtrank.data.world import World
from mtrank.online.experiment import TrafficConfig, run_experiment
from mtrank.online.online_bo import online_constraints
from mtrank.online.policies import Policy, Scores
from mtrank.online.response import rerank, respond
from mtrank.online.runs import resolve_run
from mtrank.online.stats import (
    Estimate,
    mean_estimate,
    ratio_estimate,
    relative_lift,
    z_value,
)
from mtrank.online.traffic import assign_arms, experiment_rng, sample_traffic
from mtrank.tuning.problem import UtilityProblem

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["save", "click", "long_click", "closeup"]
SMALL_WORLD = dict(seed=3, n_impressions=20_000, n_users=3_000, n_queries=300, n_products=2_000, n_files=1)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SimulatorConfig(**SMALL_WORLD))


class OracleScorer:
    """Scores with the world's true probabilities at one position (a stand-in for a trained model)."""

    def __init__(self, world: World, noise: float = 0.0, seed: int = 0) -> None:
        self.world, self.noise, self.seed = world, noise, seed
        self.tasks = list(TYPES)

    def score(self, frame: pl.DataFrame) -> Scores:
        p = self.world.true_probabilities(frame.with_columns(pl.lit(0, dtype=pl.Int32).alias("position")))
        if self.noise:
            rng = np.random.default_rng(self.seed)
            p = {t: v * np.exp(self.noise * rng.standard_normal(len(v))) for t, v in p.items()}
        return Scores({t: p[t] for t in self.tasks}, {t: p[t] for t in self.tasks})


# ------------------------------------------------------------------ arms by user
def test_arms_see_disjoint_users_and_assignment_is_a_function_of_user_and_salt(world):
    names = ["a", "b", "c"]
    frame = sample_traffic(world, 3_000, names, experiment_rng(0, "t"), salt=123)
    arms_per_user = frame.group_by("user_id").agg(pl.col("arm").n_unique().alias("n"))
    assert arms_per_user["n"].max() == 1  # every request of a user in one arm
    users = {a: set(frame.filter(pl.col("arm") == a)["user_id"].to_list()) for a in names}
    assert not (users["a"] & users["b"]) and not (users["a"] & users["c"]) and not (users["b"] & users["c"])
    shares = np.array([len(users[a]) for a in names]) / sum(len(u) for u in users.values())
    assert np.all(np.abs(shares - 1 / 3) < 0.05)
    ids = np.arange(10_000)
    assert np.array_equal(assign_arms(ids, 3, 123), assign_arms(ids, 3, 123))
    assert (assign_arms(ids, 3, 123) != assign_arms(ids, 3, 124)).mean() > 0.5  # re-randomised by the salt


# ------------------------------------------------------------------ CI arithmetic
def test_ratio_mean_and_lift_on_a_hand_made_case():
    y, x = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 4.0])
    # R = 6/8; s_y² = 1, s_x² = 4/3, s_xy = 1, x̄ = 8/3: Var = (1 − 2·0.75·1 + 0.75²·4/3) / (3 · 64/9) = 3/256
    r = ratio_estimate(y, x)
    assert r.value == pytest.approx(0.75)
    assert r.se == pytest.approx(math.sqrt(3 / 256))
    assert r.low == pytest.approx(0.75 - 1.959964 * math.sqrt(3 / 256), rel=1e-6)
    m = mean_estimate(y)
    assert (m.value, m.se, m.n_users) == (pytest.approx(2.0), pytest.approx(math.sqrt(1 / 3)), 3)
    # lift 0.6 / 0.5 − 1 = 20 %; sd of the log ratio = sqrt(0.05² + 0.08²)
    t, c = Estimate(0.6, 0.03, 0, 0, 10), Estimate(0.5, 0.04, 0, 0, 10)
    lf = relative_lift(t, c)
    sd = math.sqrt(0.05**2 + 0.08**2)
    assert lf.value == pytest.approx(0.2)
    assert lf.se == pytest.approx(1.2 * sd)
    assert (lf.low, lf.high) == (
        pytest.approx(1.2 * math.exp(-z_value() * sd) - 1),
        pytest.approx(1.2 * math.exp(z_value() * sd) - 1),
    )
    assert not lf.significant  # [−1.2 %, +45.8 %]
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_delta_method_interval_covers_the_truth_about_95_percent_of_the_time():
    # each replicate draws its users from a population: heavy and light users, very different engagement
    # rates; the truth is E[y] / E[x] = E[rate]. An impression-level (binomial) interval would cover far less.
    rng = np.random.default_rng(0)
    n_users, reps = 1000, 400
    truth = 0.5 / (0.5 + 10.0)
    hits = naive_hits = 0
    for _ in range(reps):
        x = rng.poisson(rng.lognormal(3.0, 0.8, n_users)).astype(float) + 1
        y = rng.binomial(x.astype(int), rng.beta(0.5, 10.0, n_users)).astype(float)
        e = ratio_estimate(y, x)
        hits += e.low <= truth <= e.high
        p, n = y.sum() / x.sum(), x.sum()
        naive_hits += abs(p - truth) <= 1.96 * math.sqrt(p * (1 - p) / n)
    assert 0.91 <= hits / reps <= 0.98
    assert naive_hits / reps < 0.85  # users, not impressions, are the unit


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2 users"):
        mean_estimate(np.array([1.0]))
    with pytest.raises(ValueError, match="one value per user"):
        ratio_estimate(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="no impressions"):
        ratio_estimate(np.zeros(3), np.zeros(3))


# ------------------------------------------------------------------ position bias
def test_users_respond_with_the_position_bias_of_the_policys_slots(world):
    frame = world.sample_requests(200, np.random.default_rng(1))
    reverse = -frame["retrieval_score"].to_numpy()  # the policy shows the retrieval order reversed
    shown = respond(world, frame, reverse, k=5, rng=np.random.default_rng(2))
    assert shown.height == 200 * 5 and shown["position"].max() == 4
    assert (shown["retrieval_position"] >= 15).all()  # the bottom five of twenty, now at the top
    expected = world.true_probabilities(shown)  # computed from the new position column
    assert np.allclose(shown["p_true_click"].to_numpy(), expected["click"])
    at_retrieval = world.true_probabilities(shown.with_columns(pl.col("retrieval_position").alias("position")))
    assert np.all(shown["p_true_click"].to_numpy() > at_retrieval["click"])  # moved up → more likely clicked
    # the same items at the same new positions in a world without position bias: no difference
    flat = World.build(SimulatorConfig(**SMALL_WORLD, position_bias=0.0))
    a = flat.true_probabilities(shown)["click"]
    b = flat.true_probabilities(shown.with_columns(pl.col("retrieval_position").alias("position")))["click"]
    assert np.allclose(a, b)


def test_rerank_keeps_top_k_by_score_with_ranks_as_positions():
    frame = pl.DataFrame(
        {
            "request_id": [1, 1, 1, 2, 2, 2],
            "position": pl.Series([0, 1, 2, 0, 1, 2], dtype=pl.Int32),
            "candidate_id": [10, 11, 12, 20, 21, 22],
        }
    )
    out = rerank(frame, np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.7]), k=2)
    assert out["candidate_id"].to_list() == [11, 12, 22, 20]
    assert out["position"].to_list() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="one ranking score per row"):
        rerank(frame, np.zeros(5), k=2)


# ------------------------------------------------------------------ experiments
def _oracle_experiment(world, seed: int, name: str = "exp"):
    scorers = {"oracle": OracleScorer(world), "noisy": OracleScorer(world, noise=1.5)}
    pols = [Policy("control", "noisy", {"click": 1.0}), Policy("treatment", "oracle", {"click": 1.0})]
    return run_experiment(
        world, pols, scorers, TrafficConfig(requests_per_arm=2_000, k=5, chunk_requests=1_500), TYPES, seed, name
    )


def test_same_seed_same_result_other_seed_other_traffic(world):
    a, b, c = _oracle_experiment(world, 7), _oracle_experiment(world, 7), _oracle_experiment(world, 8)
    assert json.dumps(a.to_dict() | {"seconds": 0}) == json.dumps(b.to_dict() | {"seconds": 0})
    assert a.to_dict()["arms"] != c.to_dict()["arms"]
    users = a.users_by_arm
    assert not set(users["control"]) & set(users["treatment"])
    # ranking by the true click probability beats a noisy ranking of it, in expectation
    assert a.lift("treatment", "expected_propensity", "click").low > 0


def test_online_constraints_are_eq5_on_lifts():
    problem = UtilityProblem.from_mapping(
        OmegaConf.to_container(OmegaConf.load(ROOT / "conf/utility/related_products.yaml"))
    )
    got = {c.metric: (c.op, c.bound, c.relative) for c in online_constraints(problem)}
    assert got == {
        "lift_click": (">=", 0.0, False),
        "lift_save": (">=", -10.0, False),
        "lift_closeup": (">=", 0.0, False),
    }


def test_cached_runs_are_trained_once(tmp_path):
    calls = []

    def fake_train(experiment, overrides, data_dir, run_dir, log_file):
        calls.append(experiment)
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "epoch_000.ckpt").write_bytes(b"x")
        (run_dir / "metrics.json").write_text("{}")

    a = resolve_run(None, "binary", ["debug=fast"], tmp_path, "/data", "control", trainer=fake_train)
    b = resolve_run(None, "binary", ["debug=fast"], tmp_path, "/data", "control", trainer=fake_train)
    c = resolve_run(None, "binary", [], tmp_path, "/data", "control", trainer=fake_train)
    assert a == b != c and calls == ["binary", "binary"]
    assert not list(tmp_path.glob(".*tmp*"))  # trained into a temporary sibling, then renamed
    with pytest.raises(FileNotFoundError, match="models.treatment"):
        resolve_run(tmp_path / "missing", "multitask", [], tmp_path, "/data", "treatment", trainer=fake_train)


def test_a_run_not_trained_on_the_simulator_is_refused():
    from types import SimpleNamespace

    from mtrank.online.weights import world_of

    fake = SimpleNamespace(
        run=SimpleNamespace(
            train_config=OmegaConf.create({"data": {"pipeline": {"inputs": "x"}}}), run_dir=Path("/runs/kuairand")
        )
    )
    with pytest.raises(ValueError, match=r"models.treatment .*/runs/kuairand.*simulator"):
        world_of({"treatment": fake})


# ------------------------------------------------------------------ tiny end to end
FAST = [*FAST_RUN, "trainer.max_epochs=1", "callbacks.early_stopping=null", "report.ks=[5]", "report.n_bins=5"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from mtrank.jobs.train import train

    out = {}
    data = tmp_path_factory.mktemp("ab_data")
    for exp in ("binary", "multitask"):
        tmp = tmp_path_factory.mktemp(f"ab_{exp}")
        cfg = compose_config("train", [f"experiment={exp}", *FAST], tmp)
        cfg.paths.data_dir = str(data)
        train(cfg)
        out[exp] = tmp / "run"
    return out


def test_tiny_simulation_end_to_end(tiny_runs, tmp_path):
    from mtrank.online.job import simulate_ab

    cfg = compose_config(
        "simulate_ab",
        ["ab=tiny", f"models.control={tiny_runs['binary']}", f"models.treatment={tiny_runs['multitask']}"],
        tmp_path,
    )
    cfg.models.cache_dir = str(tmp_path / "cache")
    res = simulate_ab(cfg)
    run = tmp_path / "run"
    for f in (
        "report.md",
        "table1.md",
        "table1.png",
        "online_bo.md",
        "online_bo.png",
        "comparison.md",
        "comparison.png",
        "results.json",
        "online_bo/ax_experiment.json",
    ):
        assert (run / f).is_file(), f
    saved = json.loads((run / "results.json").read_text())
    for t in TYPES:
        lf = saved["table1"]["lifts"]["treatment"]["propensity"][t]
        assert lf["low"] <= lf["value"] <= lf["high"]
    assert saved["table1"]["direction"].startswith(("Reproduced", "Not reproduced"))
    assert len(saved["online_bo"]["rounds"]) == 2
    assert set(saved["final"]["arms"]) == {"hand_picked", "offline_bo", "online_bo"}
    # Table 1's diagnostic arms: multi-task with the binary model's importance weights, and the oracle
    assert set(saved["table1"]["arms"]) == {"control", "treatment", "treatment_iw", "oracle_hand_picked"}
    iw = saved["table1"]["policies"]["treatment_iw"]["weights"]
    assert iw["long_click"] == pytest.approx(4.0 / 8.5) and iw["closeup"] == pytest.approx(1.0 / 8.5)
    for arm in ("offline_bo", "online_bo"):
        w = saved["final"]["policies"][arm]["weights"]
        assert abs(sum(w.values()) - 1.0) < 1e-6  # S1 held by both tuned weight sets
    table = (run / "table1.md").read_text()
    assert all(f"| {t} |" in table for t in TYPES)
    assert res["table1"]["direction"] == saved["table1"]["direction"]
