"""Which world a simulation runs on (``world`` group of ``conf/simulate_ab.yaml``).

* ``world=simulated`` (the default): the built-in world the runs were trained on (their ``data.simulator``,
  :func:`mtrank.online.weights.world_of`), as before.
* ``world=kuairand_fitted`` (``kind: fitted``): the world fitted to a real log (:mod:`mtrank.worlds`) is built
  (response model fitted once and cached), its training log written once, and the control / treatment runs are
  trained on that log (``data=<world.data_config> data.pipeline.inputs=[<log folder>]``); runs given in
  ``models.*`` must have been trained on that very log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mtrank.online.policies import ModelScorer
from mtrank.worlds.build import build_fitted_world, fitted_world_log
from mtrank.worlds.config import world_kind
from mtrank.worlds.fitted import FittedWorld

__all__ = ["FittedSetup", "fitted_setup", "check_trained_on"]


@dataclass
class FittedSetup:
    world: FittedWorld
    log_dir: Path
    train_overrides: list[str]


def fitted_setup(node: Mapping[str, Any] | None, data_dir: str | Path, shared_data_dir: str) -> FittedSetup | None:
    """The fitted world, its log and the training overrides of the runs; None for the built-in world."""
    if world_kind(node) != "fitted":
        return None
    assert node is not None
    world = build_fitted_world(node, data_dir)
    log_dir = fitted_world_log(world)
    overrides = [
        f"data={world.cfg.data_config}",
        f"data.pipeline.inputs=[{log_dir}]",
        f"paths.shared_data_dir={shared_data_dir}",
    ]
    return FittedSetup(world, log_dir, overrides)


def check_trained_on(setup: FittedSetup, scorers: Mapping[str, ModelScorer]) -> None:
    """Every run was trained on the fitted world's log (its ``data.pipeline.inputs``)."""
    for role, s in scorers.items():
        tc = s.run.train_config
        inputs = None if tc is None else OmegaConf.select(tc, "data.pipeline.inputs")
        got = [str(Path(str(i))) for i in (OmegaConf.to_container(inputs) if inputs is not None else [])]
        if got != [str(setup.log_dir)]:
            raise ValueError(
                f"models.{role} ({s.run.run_dir}) was trained on data.pipeline.inputs={got}, not on the log of the "
                f"world {setup.world.cfg.name} ({setup.log_dir}): an online simulation needs the world the model "
                "was trained on (leave models.* null to train on it)"
            )
