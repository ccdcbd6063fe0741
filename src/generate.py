"""Generate engagement logs: ``python src/generate.py data.simulator.n_impressions=1000000`` (the built-in world), or
``python src/generate.py world=kuairand_fitted`` (the world fitted to KuaiRand-Pure; docs/online_ab.md)."""

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
    from mtrank.worlds.config import world_kind

    world = OmegaConf.to_container(cfg.world, resolve=True) if cfg.get("world") is not None else None
    if world_kind(world) == "fitted":
        from mtrank.worlds.build import build_fitted_world, fitted_world_log
        from mtrank.worlds.logs import write_world_log

        fw = build_fitted_world(world, cfg.paths.data_dir)
        if cfg.out_dir:
            c = fw.cfg
            files = write_world_log(fw, c.n_requests, c.n_files, c.log_seed, Path(cfg.out_dir))
            out = Path(cfg.out_dir)
        else:
            out = fitted_world_log(fw)
            files = sorted(out.glob("*.parquet"))
        log.info(
            "%d files in %s; train on them with data=%s 'data.pipeline.inputs=[%s]'",
            len(files),
            out,
            fw.cfg.data_config,
            out,
        )
        return

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
