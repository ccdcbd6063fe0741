"""Train a multi-task ranker: ``python src/train.py experiment=multitask`` (see conf/train.yaml)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

from mtrank.utils.cli import user_errors  # noqa: E402 - a UserError is one block and exit status 2


def _run_dir(runs_dir: str, ckpt_path, new_name: str, *, _root_: DictConfig) -> str:
    """``hydra.run.dir``: with ``ckpt_path=last``, the folder of the run with this config (decided before Hydra
    creates or writes into any folder; a refusal exits here with its message)."""
    from mtrank.training.resume import ResumeError, resume_run_dir

    try:
        return resume_run_dir(runs_dir, ckpt_path, new_name, _root_)
    except ResumeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


OmegaConf.register_new_resolver("mtrank_run_dir", _run_dir, replace=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    from mtrank.jobs.train import train
    from mtrank.utils.hydra_utils import metric_for_sweeper

    metrics = train(cfg)
    return metric_for_sweeper(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
