"""Predictions in the ``mtrank.scoring.score`` Parquet contract, made from the simulator's known truth.

For tests, benchmarks and trying the tuner without a trained model: labels and ``p_true_<task>`` come
from :func:`mtrank.data.simulator.simulate`; the "model" predictions ``p_<task>`` are the true
probabilities with Gaussian noise of standard deviation ``noise`` on the logit scale (a model that is
right on average but not perfect; ``noise=0`` gives the oracle). ``p_raw_<task>`` equals ``p_<task>``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mtrank.data.simulator import simulate
from mtrank.data.simulator_config import TASKS, SimulatorConfig

__all__ = ["simulated_predictions"]


def simulated_predictions(
    n_impressions: int = 200_000,
    noise: float = 0.5,
    seed: int = 0,
    tasks: tuple[str, ...] | list[str] = TASKS,
    **simulator: object,
) -> pl.DataFrame:
    """A predictions frame: ``request_id``, ``item_id``, ``label_<t>``, ``p_raw_<t>``, ``p_<t>``, ``p_true_<t>``."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the simulator knows {list(TASKS)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    sim_kwargs = {"n_users": 4000, "n_queries": 1000, "n_products": 4000, **simulator}
    log = simulate(
        SimulatorConfig.from_mapping({"seed": seed, "n_impressions": n_impressions, "n_files": 1, **sim_kwargs})
    )
    rng = np.random.default_rng([seed, 7])
    cols: list[pl.Series] = [
        log["request_id"].cast(pl.Int64),
        log["candidate_id"].cast(pl.Int64).alias("item_id"),
    ]
    for t in tasks:
        p_true = log[f"p_true_{t}"].to_numpy()
        logit = np.log(p_true) - np.log1p(-p_true)
        p = 1.0 / (1.0 + np.exp(-(logit + noise * rng.standard_normal(len(p_true)))))
        cols += [
            log[t].cast(pl.UInt8).alias(f"label_{t}"),
            pl.Series(f"p_raw_{t}", p, dtype=pl.Float32),
            pl.Series(f"p_{t}", p, dtype=pl.Float32),
            pl.Series(f"p_true_{t}", p_true, dtype=pl.Float32),
        ]
    return pl.DataFrame(cols)
