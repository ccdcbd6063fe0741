"""Helpers of the utility-tuning tests: the shipped utility problems, the S1 / S2 check, a small GP budget."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mtrank.tuning.generation import GenerationConfig
from mtrank.tuning.problem import UtilityProblem

UTILITY_CONF = Path(__file__).resolve().parents[1] / "conf" / "utility"


def utility_problem(name: str) -> UtilityProblem:
    """The problem of ``conf/utility/<name>.yaml``."""
    return UtilityProblem.from_mapping(OmegaConf.to_container(OmegaConf.load(UTILITY_CONF / f"{name}.yaml")))


def assert_s1_s2(problem: UtilityProblem, params: dict, bound_tol: float = 1e-9) -> None:
    """The weights of ``params`` sum to the total (S1, up to float rounding) and lie in their bounds (S2)."""
    w = problem.weights_of(params)
    assert set(w) == set(problem.tasks)
    assert abs(sum(w.values()) - problem.total) <= 1e-9, w
    for t, (lo, hi) in problem.bounds.items():
        assert lo - bound_tol <= w[t] <= hi + bound_tol, (t, w[t])


def small_gp(**overrides) -> GenerationConfig:
    """A GP budget small enough for a test: 3 Sobol trials, 4 restarts, 128 raw samples."""
    settings = dict(
        method="fast",
        initialization_budget=3,
        initialize_with_center=False,
        seed=0,
        noiseless=True,
        num_restarts=4,
        raw_samples=128,
    )
    return GenerationConfig(**{**settings, **overrides})
