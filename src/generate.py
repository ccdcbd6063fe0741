"""Generate simulated engagement logs: ``python src/generate.py data.simulator.n_impressions=1000000``."""

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

from mtrank.utils.cli import user_errors  # noqa: E402 - a UserError is one block and exit status 2

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@user_errors
def main(cfg: DictConfig) -> None:
    from mtrank.data.datamodule import simulated_logs
    from mtrank.data.simulator import generate_logs
    from mtrank.data.simulator_config import SimulatorConfig

    sim = OmegaConf.to_container(cfg.data.simulator, resolve=True)
    if cfg.out_dir:
        files = generate_logs(SimulatorConfig.from_mapping(sim), Path(cfg.out_dir))
        out = Path(cfg.out_dir)
    else:
        out = simulated_logs(sim, cfg.data.raw_dir)
        files = sorted(out.glob("*.parquet"))
    log.info("%d files in %s", len(files), out)


if __name__ == "__main__":
    main()
