"""mtrank.tuning: S1/S2 search space, outcome-constraint arithmetic, the Ax loop, resume, the tune_utility job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from mtrank.tuning.ax_loop import AxLoop
from mtrank.tuning.generation import GenerationConfig
from mtrank.tuning.outcomes import (
    OutcomeConstraint,
    is_feasible,
    relative_constraints,
    thresholds,
    violations,
)
from mtrank.tuning.problem import UtilityProblem
from mtrank.tuning.space import Range, SearchSpace, SumConstraint, weight_space
from mtrank.tuning.synthetic import simulated_predictions
from mtrank.tuning.utility_task import run_tuning
from mtrank.utility.objectives import UtilityEvaluator
from tuning_helpers import assert_s1_s2, small_gp, utility_problem

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ax's own JSON decoder warns

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pred") / "predictions.parquet"
    simulated_predictions(20_000, noise=0.5, seed=0).write_parquet(path)
    return path


# ------------------------------------------------------------------ space
def test_weight_space_derives_one_weight_and_bounds_it_with_inequalities():
    space = weight_space({"a": [0.0, 1.0], "b": [0.0, 0.5], "hide": [-1.0, 0.0]}, total=1.0, derived="b")
    assert space.free_names == ["w_a", "w_hide"]
    assert space.ax_parameter_constraints() == ["w_a + w_hide <= 1.0", "w_a + w_hide >= 0.5"]
    full = space.complete({"w_a": 0.8, "w_hide": -0.2})
    assert full["w_b"] == pytest.approx(0.4) and space.check(full) == []
    assert any("outside" in p for p in space.check({"w_a": 1.0, "w_hide": -0.9, "w_b": 0.9}))
    assert any("sum" in p for p in space.check({"w_a": 0.5, "w_hide": -0.1, "w_b": 0.3}))
    with pytest.raises(ValueError, match="add up to"):
        space.complete({"w_a": 0.8, "w_hide": -0.2, "w_b": 0.1})
    with pytest.raises(ValueError, match="cannot be reached"):
        weight_space({"a": [0.0, 0.3], "b": [0.0, 0.3]}, total=1.0)
    with pytest.raises(ValueError, match="derived"):
        SearchSpace((Range("x", 0, 1), Range("y", 0, 1)), SumConstraint(("x", "y"), 1.0, "z"))


def test_ax_parameters_hold_the_sum_exactly():
    from ax.api.configs import DerivedParameterConfig

    space = weight_space({"a": [0.0, 1.0], "b": [0.0, 1.0], "c": [0.0, 1.0]}, total=2.0)
    params = space.ax_parameters()
    derived = [p for p in params if isinstance(p, DerivedParameterConfig)]
    assert [p.name for p in derived] == ["w_c"] and derived[0].expression_str == "2.0 - w_a - w_b"


# ------------------------------------------------------------------ outcome constraints
def test_relative_constraint_arithmetic_is_c_times_baseline():
    c = OutcomeConstraint.parse("f_save >= 0.9 * baseline")
    assert (c.metric, c.op, c.bound, c.relative) == ("f_save", ">=", 0.9, True)
    assert c.threshold(0.2) == pytest.approx(0.18)  # c · b
    assert c.satisfied(0.181, 0.2) and not c.satisfied(0.179, 0.2)
    assert OutcomeConstraint.parse("val/click/auroc >= 1.0 * baseline").threshold(0.75) == pytest.approx(0.75)
    up = OutcomeConstraint.parse("f_hide <= 1.1 * baseline")
    assert up.threshold(0.01) == pytest.approx(0.011) and not up.satisfied(0.0111, 0.01)
    absolute = OutcomeConstraint.parse("f_click >= 0.12")
    assert not absolute.relative and absolute.threshold(None) == 0.12
    with pytest.raises(ValueError, match="baseline"):
        c.threshold(None)
    with pytest.raises(ValueError, match="cannot read"):
        OutcomeConstraint.parse("f_click > 0.1")
    cons = relative_constraints({"click": 1.0, "save": 0.9}, "f_{}")
    base = {"f_click": 0.15, "f_save": 0.1}
    assert thresholds(cons, base) == {
        "f_click >= 1.0 * baseline": pytest.approx(0.15),
        "f_save >= 0.9 * baseline": pytest.approx(0.09),
    }
    assert is_feasible({"f_click": 0.15, "f_save": 0.0905}, cons, base)
    assert violations({"f_click": 0.149, "f_save": 0.0905}, cons, base)[0].startswith("f_click")


def test_threshold_agrees_with_ax_derelativisation():
    from ax.adapter.transforms.derelativize import derelativize_bound
    from ax.core.outcome_constraint import OutcomeConstraint as AxConstraint

    for text, b in [
        ("m >= 0.9 * baseline", 0.2),
        ("m >= 1.05 * baseline", 0.3),
        ("m <= 0.8 * baseline", -2.0),
        ("m >= 0.9 * baseline", -0.5),
    ]:
        ax_c = AxConstraint(expression=text, metric_name_to_signature={"m": "m"})
        assert OutcomeConstraint.parse(text).threshold(b) == pytest.approx(derelativize_bound(ax_c.bound, b), rel=1e-9)


# ------------------------------------------------------------------ the utility problems in conf/utility
def test_conf_utility_problems_are_valid_and_hide_is_negative():
    four = utility_problem("related_products")
    assert four.tasks == ["save", "click", "long_click", "closeup"] and four.objective_metric == "f_long_click"
    assert {c.metric: c.bound for c in four.constraints} == {"f_click": 1.0, "f_save": 0.9, "f_closeup": 1.0}
    ext = utility_problem("related_products_ext")
    assert set(ext.tasks) == {"save", "click", "long_click", "closeup", "hide", "checkout"}
    assert ext.weights["hide"] < 0 and ext.bounds["hide"][1] <= 0
    assert any(c.metric == "f_hide" and c.op == "<=" for c in ext.constraints)
    for p in (four, ext):
        assert sum(p.weights.values()) == pytest.approx(p.total)
    bad = OmegaConf.to_container(OmegaConf.load(CONF / "utility" / "related_products.yaml"))
    bad["weights"]["save"] = 0.5
    with pytest.raises(ValueError, match="break S1/S2"):
        UtilityProblem.from_mapping(bad)
    bad = OmegaConf.to_container(OmegaConf.load(CONF / "utility" / "related_products.yaml"))
    del bad["bounds"]["click"]
    with pytest.raises(ValueError, match="utility.bounds"):
        UtilityProblem.from_mapping(bad, "utility")


# ------------------------------------------------------------------ the Ax loop
@pytest.mark.parametrize("name", ["related_products", "related_products_ext"])
def test_every_trial_satisfies_s1_and_s2_and_best_meets_constraints(tmp_path, predictions, name):
    problem = utility_problem(name)
    ev = UtilityEvaluator.from_parquet(predictions, problem.tasks, problem.label_tasks)
    loop = run_tuning(
        problem, ev, 12, GenerationConfig(method="random_search", seed=1, noiseless=True), tmp_path / "ax.json"
    )
    recs = loop.records()
    assert recs[0].is_baseline and recs[0].status == "COMPLETED"
    assert recs[0].params == pytest.approx(problem.params(problem.weights))
    assert loop.n_finished == 12 and len(recs) == 13 and loop.done
    for r in recs:
        assert_s1_s2(problem, r.params)
    base = loop.baseline_values()
    best = loop.best()
    assert best is not None  # the baseline itself meets c ≤ 1 constraints
    assert is_feasible(best.metrics, problem.constraints, base)
    better = [
        r for r in recs if r.feasible and r.metrics[problem.objective_metric] > best.metrics[problem.objective_metric]
    ]
    assert not better
    if name == "related_products_ext":
        assert min(problem.weights_of(r.params)["hide"] for r in recs) < 0


@pytest.mark.slow
def test_gp_trials_satisfy_s1_and_s2(tmp_path, predictions):
    problem = utility_problem("related_products")
    ev = UtilityEvaluator.from_parquet(predictions, problem.tasks, problem.label_tasks)
    gen = small_gp()
    loop = run_tuning(problem, ev, 5, gen, tmp_path / "ax.json")
    nodes = [r.node for r in loop.records()]
    assert "MBM" in nodes, nodes  # GP-generated trials were checked too
    for r in loop.records():
        assert_s1_s2(problem, r.params)


def test_random_search_resumes_without_repeating(tmp_path, predictions):
    problem = utility_problem("related_products")
    ev = UtilityEvaluator.from_parquet(predictions, problem.tasks, problem.label_tasks)
    gen = GenerationConfig(method="random_search", seed=0, noiseless=True)
    state = tmp_path / "ax.json"
    first = run_tuning(problem, ev, 4, gen, state)
    assert first.n_finished == 4
    again = run_tuning(problem, ev, 9, gen, state)  # resume with a larger budget
    recs = again.records()
    assert again.n_finished == 9 and [r.index for r in recs] == list(range(10))
    keys = {tuple(round(v, 12) for v in r.params.values()) for r in recs}
    assert len(keys) == len(recs)
    with pytest.raises(ValueError, match="search space"):
        AxLoop.load(state, utility_problem("related_products_ext").space, "f_long_click", 9)


KILL_SCRIPT = """
import sys
from pathlib import Path
from omegaconf import OmegaConf
from mtrank.tuning.generation import GenerationConfig, quiet_ax
from mtrank.tuning.problem import UtilityProblem
from mtrank.tuning.utility_task import run_tuning
from mtrank.utility.objectives import UtilityEvaluator
quiet_ax()
problem = UtilityProblem.from_mapping(OmegaConf.to_container(OmegaConf.load(sys.argv[1])))
ev = UtilityEvaluator.from_parquet(sys.argv[2], problem.tasks, problem.label_tasks)
run_tuning(problem, ev, int(sys.argv[4]), GenerationConfig(method="random_search", seed=0, noiseless=True), sys.argv[3])
"""


def _finished(state: Path) -> dict[int, dict]:
    """Trials in an Ax snapshot by index: status and parameters (read without Ax)."""
    if not state.exists():
        return {}
    exp = json.loads(state.read_text())["experiment"]
    out = {}
    for t in exp["trials"].values():
        out[int(t["index"])] = {
            "status": t["status"]["name"] if isinstance(t["status"], dict) else str(t["status"]),
            "params": t["generator_run"]["arms"][0]["parameters"] if t.get("generator_run") else None,
        }
    return out


def test_killed_run_resumes_to_the_configured_number_of_trials(tmp_path, predictions):
    """SIGKILL a tuning process mid-way; the rerun ends with exactly n_trials, none repeated or lost."""
    n_trials = 15
    state = tmp_path / "ax.json"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    cmd = [
        sys.executable,
        str(script),
        str(CONF / "utility" / "related_products.yaml"),
        str(predictions),
        str(state),
        str(n_trials),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # generous: importing Ax on a busy 2-core machine can take long
    seen: dict = {}
    while time.time() < deadline and proc.poll() is None:
        seen = _finished(state)  # never half-written: the snapshot is replaced atomically
        if len(seen) >= 5:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _finished(state)
    done_before = [i for i, t in before.items() if i > 0 and "COMPLETED" in t["status"]]
    assert 0 < len(done_before) < n_trials, "the run was not killed mid-way"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _finished(state)
    assert sorted(after) == list(range(n_trials + 1))  # baseline + n_trials, indices contiguous
    assert all("COMPLETED" in t["status"] for t in after.values())
    for i in done_before:  # nothing finished before the kill was redone or changed
        assert after[i]["params"] == before[i]["params"]
    keys = [tuple(sorted(t["params"].items())) for i, t in after.items() if i > 0]
    assert len(set(keys)) == n_trials  # no trial repeated


def test_tune_utility_job_writes_its_outputs(tmp_path, predictions):
    from hydra import compose, initialize_config_dir

    from mtrank.tuning.utility_task import tune_utility

    out = tmp_path / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "tune_utility",
            overrides=[
                f"predictions={predictions}",
                f"paths.output_dir={out}",
                f"paths.work_dir={tmp_path}",
                "n_trials=4",
                "generation.method=random_search",
                "compare_random=true",
            ],
        )
    best = tune_utility(cfg)
    assert best["f_long_click"] > 0
    for name in (
        "ax_experiment.json",
        "trials.csv",
        "trials.png",
        "best_weights.yaml",
        "summary.json",
        "random_search/ax_experiment.json",
        "random_search/trials.csv",
    ):
        assert (out / name).exists(), name
    bw = yaml.safe_load((out / "best_weights.yaml").read_text())
    assert bw["feasible"] and sum(bw["weights"].values()) == pytest.approx(1.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 4 and summary["random_search"]["n_trials"] == 4
    assert summary["thresholds"]["f_save >= 0.9 * baseline"] == pytest.approx(0.9 * summary["baseline"]["f_save"])
    # evaluate mode: the f_t of the configured weights, what a sweeper job returns
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "tune_utility",
            overrides=[
                f"predictions={predictions}",
                f"paths.output_dir={tmp_path / 'ev'}",
                f"paths.work_dir={tmp_path}",
                "mode=evaluate",
            ],
        )
    values = tune_utility(cfg)
    assert values == pytest.approx(summary["baseline"])
