"""Bayesian optimisation of the utility weights on online metrics: the post's proposed next step.

Rounds of A/B experiments. In every round the control arm (the multi-task model with the hand-picked
weights, Ax's baseline arm) runs beside ``arms_per_round`` arms whose weights Ax proposes from the previous
rounds (Sobol points in the first round, then the GP's acquisition function). Each arm is reported to Ax as
its **relative lift against that round's control** (in %), with the lift's standard error, so that rounds on
different traffic are comparable and Ax fits a noisy GP.

Eq. 5 is written on these online metrics: with ``f_t`` the online metric of type t (propensity by default)
and ``b_t`` the control's in the same round, ``f_t ≥ c_t · b_t`` is ``lift_t ≥ 100 · (c_t − 1)`` %, and the
objective ``f_long_click`` becomes ``lift_long_click``. S1 and S2 are the same search space as offline
(:class:`~mtrank.tuning.space.SearchSpace`). The baseline arm's lift is 0 by definition (standard error 0).

The weights chosen at the end are Ax's best arm by the model's predictions (``get_best_parameterization``),
which shrinks the noisy observations; the best observed feasible arm is recorded too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mtrank.online.experiment import ExperimentResult
from mtrank.tuning.ax_loop import AxLoop
from mtrank.tuning.generation import GenerationConfig, quiet_ax
from mtrank.tuning.outcomes import OutcomeConstraint
from mtrank.tuning.problem import METRIC_PREFIX, UtilityProblem

log = logging.getLogger(__name__)

__all__ = ["LIFT_PREFIX", "CONTROL_ARM", "OnlineBOConfig", "OnlineBOResult", "online_constraints", "run_online_bo"]

LIFT_PREFIX = "lift_"
CONTROL_ARM = "hand_picked"


@dataclass(frozen=True)
class OnlineBOConfig:
    rounds: int = 3
    arms_per_round: int = 4
    metric: str = "propensity"  # propensity | volume | expected_propensity | expected_volume
    generation: GenerationConfig = GenerationConfig()

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.arms_per_round < 1:
            raise ValueError(
                f"online BO needs rounds >= 1 and arms_per_round >= 1, got {self.rounds} and {self.arms_per_round}"
            )
        if self.metric not in ("propensity", "volume", "expected_propensity", "expected_volume"):
            raise ValueError(
                f"online_bo.metric must be propensity | volume | expected_propensity | "
                f"expected_volume, got {self.metric!r}"
            )


def online_constraints(problem: UtilityProblem) -> list[OutcomeConstraint]:
    """S3–S5 (and relative extra constraints) of the offline problem rewritten on online lifts (%).

    ``f_t ≥ c · baseline`` → ``lift_t ≥ 100 (c − 1)``; absolute offline constraints (a PR-AUC level) have no
    online counterpart and are left out with a warning.
    """
    out = []
    for c in problem.constraints:
        if not c.relative:
            log.warning("online BO: constraint %s is absolute on an offline metric; it is not carried online", c)
            continue
        t = c.metric[len(METRIC_PREFIX) :]
        out.append(OutcomeConstraint(LIFT_PREFIX + t, c.op, round(100.0 * (c.bound - 1.0), 12), relative=False))
    return out


@dataclass
class OnlineBOResult:
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: arms, weights, lifts, timings
    best_weights: dict[str, float] | None = None  # Ax's model-based best (the weights taken to the final test)
    best_source: str = ""
    best_predicted: dict[str, Any] | None = None
    best_observed: dict[str, Any] | None = None
    constraints: list[str] = field(default_factory=list)
    objective: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "objective",
                "constraints",
                "rounds",
                "best_weights",
                "best_source",
                "best_predicted",
                "best_observed",
                "seconds",
            )
        }


def _ax_values(result: ExperimentResult, arm: str, metric: str, types: list[str]) -> dict[str, tuple[float, float]]:
    vals = {}
    for t in types:
        lf = result.lift(arm, metric, t)
        vals[LIFT_PREFIX + t] = (100.0 * lf.value, 100.0 * lf.se)
    return vals


def _ask(loop: AxLoop, n: int) -> dict[int, dict[str, Any]]:
    """``n`` new trials: Ax hands out fewer per call when it moves from Sobol to the GP, so ask again."""
    trials: dict[int, dict[str, Any]] = {}
    while len(trials) < n:
        more = loop.ask(n - len(trials))
        if not more:
            break
        trials.update(more)
    return trials


def run_online_bo(
    problem: UtilityProblem,
    evaluate_round: Callable[[int, Mapping[str, Mapping[str, float]]], ExperimentResult],
    cfg: OnlineBOConfig,
    state_file: str | Path | None = None,
) -> OnlineBOResult:
    """Run ``cfg.rounds`` rounds. ``evaluate_round(r, {arm: weights})`` runs round ``r``'s experiment with the
    control arm :data:`CONTROL_ARM` (hand-picked weights) and the given arms, and returns its result."""
    quiet_ax()
    t0 = time.perf_counter()
    if cfg.generation.initialization_budget is None:  # Sobol for the whole first round (the baseline counts)
        cfg = replace(cfg, generation=replace(cfg.generation, initialization_budget=cfg.arms_per_round + 1))
    constraints = online_constraints(problem)
    objective = LIFT_PREFIX + problem.objective
    types = list(dict.fromkeys([problem.objective] + [c.metric[len(LIFT_PREFIX) :] for c in constraints]))
    loop = AxLoop.create(
        space=problem.space,
        objective=objective,
        n_trials=cfg.rounds * cfg.arms_per_round,
        constraints=constraints,
        generation=cfg.generation,
        baseline=problem.params(problem.weights),
        path=state_file,
        name="utility_online",
    )
    base = loop.baseline_index
    assert base is not None
    loop.tell(base, {LIFT_PREFIX + t: (0.0, 0.0) for t in types})  # the control against itself: exactly 0
    out = OnlineBOResult(constraints=[str(c) for c in constraints], objective=objective)
    for r in range(cfg.rounds):
        g0 = time.perf_counter()
        trials = _ask(loop, cfg.arms_per_round)
        gen_seconds = time.perf_counter() - g0
        if not trials:
            break
        arms = {f"r{r}_trial{i}": problem.weights_of(params) for i, params in trials.items()}
        result = evaluate_round(r, arms)
        round_rec: dict[str, Any] = {
            "round": r,
            "gen_seconds": gen_seconds,
            "eval_seconds": result.seconds,
            "control_weights": dict(problem.weights),
            "arms": {},
        }
        for (i, _), (name, weights) in zip(trials.items(), arms.items()):
            vals = _ax_values(result, name, cfg.metric, types)
            loop.tell(i, vals, eval_seconds=result.seconds / len(trials))
            rec = loop.record(i)
            round_rec["arms"][name] = {
                "trial": i,
                "generator": rec.node,
                "weights": weights,
                "lifts": {t: result.lift(name, cfg.metric, t).to_dict() for t in result.types},
                "feasible_observed": rec.feasible,
                "violations": rec.violations,
            }
        out.rounds.append(round_rec)
        log.info(
            "Online BO round %d/%d: %d arms (%s), generated in %.1fs, experiment %.1fs",
            r + 1,
            cfg.rounds,
            len(trials),
            next(iter(round_rec["arms"].values()))["generator"],
            gen_seconds,
            result.seconds,
        )
    observed = loop.best()
    if observed is not None:
        out.best_observed = {
            "trial": observed.index,
            "is_baseline": observed.is_baseline,
            "weights": problem.weights_of(observed.params),
            "metrics": observed.metrics,
        }
    try:
        params, predicted, trial, arm = loop.client.get_best_parameterization(use_model_predictions=True)
        out.best_weights = problem.weights_of(
            problem.space.complete({k: v for k, v in params.items() if k in problem.space.free_names})
        )
        out.best_source = (
            "Ax get_best_parameterization (the GP's predictions; Ax falls back to the observed "
            "values when it judges the fit poor)"
        )
        out.best_predicted = {
            "trial": trial,
            "arm": arm,
            "metrics": {k: list(v) if isinstance(v, tuple) else v for k, v in predicted.items()},
        }
    except Exception as e:  # noqa: BLE001 - e.g. no feasible arm under the model: fall back to the observed best
        log.warning("Ax could not name a best arm from its model (%s): taking the best observed feasible arm", e)
        if observed is not None:
            out.best_weights = problem.weights_of(observed.params)
            out.best_source = "best observed feasible arm"
        else:
            out.best_weights = dict(problem.weights)
            out.best_source = "no feasible arm observed: hand-picked weights kept"
    out.seconds = time.perf_counter() - t0
    return out
