"""Tune the utility weights of Eq. 4 with Ax (Eq. 5): ``python src/tune_utility.py predictions=...``
(see conf/tune_utility.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

from mtrank.utils.cli import user_errors  # noqa: E402 - a UserError is one block and exit status 2


@hydra.main(version_base="1.3", config_path="../conf", config_name="tune_utility")
@user_errors
def main(cfg: DictConfig) -> dict[str, float]:
    from mtrank.tuning.utility_task import tune_utility
    from mtrank.validation import validate_tune_config

    validate_tune_config(cfg)  # ConfigError naming the key, before anything is read
    return tune_utility(cfg)


if __name__ == "__main__":
    main()
