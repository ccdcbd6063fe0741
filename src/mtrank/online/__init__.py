"""Simulated online A/B tests against the simulator's ground truth (the post's Table 1 and online BO).

* :mod:`~mtrank.online.stats` — CI arithmetic with users as the unit (delta method), pure functions;
* :mod:`~mtrank.online.traffic` — fresh requests, arms assigned by a salted hash of the user id;
* :mod:`~mtrank.online.policies` — a model plus utility weights (or the model's own score) → ranking scores;
* :mod:`~mtrank.online.response` — re-rank, show the top k, draw engagements with the policy's position bias;
* :mod:`~mtrank.online.metrics` — propensity and volume per arm and type, lifts vs control;
* :mod:`~mtrank.online.experiment` — one experiment end to end;
* :mod:`~mtrank.online.online_bo` — rounds of experiments whose arms Ax proposes (Eq. 5 on online lifts);
* :mod:`~mtrank.online.runs` — the control / treatment runs, given or trained once and cached;
* :mod:`~mtrank.online.report`, :mod:`~mtrank.online.job` — outputs and the ``src/simulate_ab.py`` job.
"""

from mtrank.online.experiment import ExperimentResult, TrafficConfig, run_experiment
from mtrank.online.metrics import arm_metrics, lifts, user_totals
from mtrank.online.policies import ModelScorer, Policy, Scores
from mtrank.online.response import rerank, respond
from mtrank.online.stats import (
    Estimate,
    Lift,
    mean_estimate,
    ratio_estimate,
    relative_lift,
)
from mtrank.online.traffic import assign_arms, sample_traffic

__all__ = [
    "Estimate",
    "Lift",
    "mean_estimate",
    "ratio_estimate",
    "relative_lift",
    "assign_arms",
    "sample_traffic",
    "ModelScorer",
    "Policy",
    "Scores",
    "rerank",
    "respond",
    "user_totals",
    "arm_metrics",
    "lifts",
    "TrafficConfig",
    "ExperimentResult",
    "run_experiment",
]
