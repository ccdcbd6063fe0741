"""Evaluate a trained run: ``python src/eval.py ckpt_path=<run folder or .ckpt>`` (see conf/eval.yaml)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

from mtrank.utils.cli import user_errors  # noqa: E402 - a UserError is one block and exit status 2


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@user_errors
def main(cfg: DictConfig) -> None:
    from mtrank.jobs.evaluate import evaluate
    from mtrank.validation import validate_eval_config

    validate_eval_config(cfg)  # ConfigError naming the key, before anything is read
    evaluate(cfg)


if __name__ == "__main__":
    main()
