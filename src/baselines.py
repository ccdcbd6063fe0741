"""Baselines beside the nets: ``python src/baselines.py experiment=kuairand [baseline=logistic]``
(see conf/baselines.yaml and mtrank.baselines)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="baselines")
def main(cfg: DictConfig) -> float | None:
    from mtrank.baselines.job import run_baseline

    metrics = run_baseline(cfg)
    return metrics.get("val/mean/auroc")


if __name__ == "__main__":
    main()
