"""Score logs with a trained run: ``python src/predict.py ckpt_path=<run> inputs=<logs>`` (see conf/predict.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

from mtrank.utils.cli import user_errors  # noqa: E402 - a UserError is one block and exit status 2


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@user_errors
def main(cfg: DictConfig) -> None:
    from mtrank.jobs.predict import predict

    predict(cfg)


if __name__ == "__main__":
    main()
