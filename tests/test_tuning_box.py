"""generation.simplex=box: S1 ∩ S2 mapped one-to-one onto a box (mtrank.tuning.simplex), exactly and back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from mtrank.tuning.ax_loop import AxLoop
from mtrank.tuning.generation import GenerationConfig
from mtrank.tuning.problem import UtilityProblem
from mtrank.tuning.simplex import BOX_PREFIX, BoxMap
from mtrank.tuning.space import weight_space
from mtrank.tuning.synthetic import simulated_predictions
from mtrank.tuning.utility_task import run_tuning
from mtrank.utility.objectives import UtilityEvaluator
from tuning_helpers import assert_s1_s2, small_gp, utility_problem

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ax's own JSON decoder warns

CONF = Path(__file__).resolve().parents[1] / "conf"
PROBLEMS = ["related_products", "related_products_ext"]


def _polytope_points(problem: UtilityProblem, n: int, rng: random.Random) -> list[dict[str, float]]:
    """Random weight vectors within S1 ∩ S2 (rejection from the box of the free weights)."""
    space = problem.space
    free = [t for t in problem.tasks if t != problem.derived]
    out: list[dict[str, float]] = []
    while len(out) < n:
        w = {t: rng.uniform(*problem.bounds[t]) for t in free}
        w[problem.derived] = problem.total - sum(w.values())
        params = {f"w_{t}": v for t, v in w.items()}
        if not space.check(params):
            out.append(params)
    return out


@pytest.mark.parametrize("name", PROBLEMS)
def test_box_maps_onto_s1_s2_exactly_and_back(name):
    problem = utility_problem(name)
    space = problem.space
    bm = space.box_map()
    assert bm is not None and bm.derived == f"w_{problem.derived}"
    assert space.ax_names(box=True) == bm.box_names and all(n.startswith(BOX_PREFIX) for n in bm.box_names)
    assert space.ax_parameter_constraints(box=True) == [] and len(space.ax_parameter_constraints()) == 2
    rng = random.Random(0)
    corners = [dict(zip(bm.box_names, c)) for c in np.ndindex(*(2,) * len(bm.box_names))]
    for u in [{k: rng.random() for k in bm.box_names} for _ in range(2000)] + corners:
        w = space.from_ax(u, box=True)
        assert list(w) == space.names
        assert_s1_s2(problem, w, bound_tol=1e-12)  # every point of the box is a member of S1 ∩ S2
        if all(0 < x < 1 for x in u.values()):  # inside the box the map is one-to-one
            back = space.to_ax(w, box=True)
            assert back == pytest.approx(u, abs=1e-9)
    for w in _polytope_points(problem, 1000, rng):  # ... and onto: every member has a box point
        u = space.to_ax(w, box=True)
        assert all(0.0 <= x <= 1.0 for x in u.values())
        assert space.from_ax(u, box=True) == pytest.approx(w, abs=1e-9)
    base = problem.params(problem.weights)
    assert space.from_ax(space.to_ax(base, box=True), box=True) == pytest.approx(base, abs=1e-12)


def test_box_of_the_plain_simplex_is_uniform():
    """Bounds [0, C]: uniform box points give uniform weights (a flat Dirichlet), so Sobol points in the box
    cover the simplex evenly: each weight has mean C/k and P(w_t > C/2) = (1/2)^(k−1)."""
    k, total = 4, 2.0
    bm = BoxMap.of([f"w{i}" for i in range(k)], {f"w{i}": (0.0, total) for i in range(k)}, total, "w3")
    rng = np.random.default_rng(0)
    ws = np.array([list(bm.to_weights(dict(zip(bm.box_names, u))).values()) for u in rng.random((20_000, k - 1))])
    assert np.allclose(ws.sum(axis=1), total, atol=1e-12)
    assert np.allclose(ws.mean(axis=0), total / k, atol=0.02)
    assert np.allclose((ws > total / 2).mean(axis=0), 0.5 ** (k - 1), atol=0.01)


def test_box_refuses_extra_parameter_constraints_and_unknown_simplex():
    space = weight_space({"a": [0.0, 1.0], "b": [0.0, 1.0], "c": [0.0, 1.0]}, total=1.0)
    space = type(space)(space.params, space.sum_constraint, ("w_a <= 0.5",))
    with pytest.raises(ValueError, match="simplex=box"):
        space.ax_parameter_constraints(box=True)
    with pytest.raises(ValueError, match="simplex"):
        GenerationConfig(simplex="cube")


@pytest.mark.parametrize("name", [pytest.param(PROBLEMS[0], marks=pytest.mark.slow), PROBLEMS[1]])
def test_gp_trials_in_the_box_satisfy_s1_s2_and_resume(tmp_path, name):
    """Sobol and GP trials of a box-parameterised run are weights in S1 ∩ S2; the snapshot holds box coordinates,
    a resumed run keeps them and the baseline arm is the hand-picked weights."""
    problem = utility_problem(name)
    frame = simulated_predictions(20_000, noise=0.5, seed=0, tasks=problem.tasks)
    ev = UtilityEvaluator.from_frame(frame, problem.tasks, problem.label_tasks)
    gen = small_gp(simplex="box")
    state = tmp_path / "ax.json"
    first = run_tuning(problem, ev, 3, gen, state)
    assert first.box
    loop = run_tuning(problem, ev, 4, GenerationConfig(method="fast", simplex="derived", noiseless=True), state)
    assert loop.box  # the parameterisation comes from the snapshot
    recs = loop.records()
    assert [r.index for r in recs] == list(range(5)) and "MBM" in [r.node for r in recs]
    assert recs[0].is_baseline and recs[0].params == pytest.approx(problem.params(problem.weights), abs=1e-12)
    for r in recs:
        assert_s1_s2(problem, r.params, bound_tol=1e-12)
    stored = json.loads(state.read_text())["experiment"]["search_space"]["parameters"]
    assert sorted(p["name"] for p in stored) == sorted(problem.space.ax_names(box=True))
    with pytest.raises(ValueError, match="search space"):
        AxLoop.load(state, utility_problem(PROBLEMS[1 - PROBLEMS.index(name)]).space, "f_long_click", 4)
