"""Simulated online A/B tests: ``python src/simulate_ab.py`` (see conf/simulate_ab.yaml and docs/online_ab.md)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

from mtrank.utils.cli import user_errors  # noqa: E402 - a UserError is one block and exit status 2


@hydra.main(version_base="1.3", config_path="../conf", config_name="simulate_ab")
@user_errors
def main(cfg: DictConfig) -> None:
    from mtrank.online.job import simulate_ab

    simulate_ab(cfg)


if __name__ == "__main__":
    main()
