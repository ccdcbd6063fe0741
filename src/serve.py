"""Serve an exported artifact over HTTP: ``python src/serve.py artifact=<artifact or run folder> port=8080`` (see
conf/serve.yaml and README "Serving"). A run folder without an artifact is exported first (``src/export.py`` in a
child process, so that the service itself never imports the training stack)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
log = logging.getLogger("mtrank.serve")


def _artifact_dir(cfg: DictConfig) -> Path:
    from mtrank.serving.app import resolve_artifact

    if not cfg.get("artifact"):
        raise ValueError("artifact is required: an artifact folder (python src/export.py) or a training run folder")
    given = Path(str(cfg.artifact)).expanduser()
    if not given.exists():
        raise FileNotFoundError(f"artifact={given} does not exist")
    target = resolve_artifact(given)
    if not (target / "manifest.json").is_file():
        if not (given / "checkpoints").is_dir():
            raise FileNotFoundError(
                f"artifact={given} is neither an artifact folder (no manifest.json) nor a training "
                "run folder (no checkpoints/)"
            )
        chosen = cfg.weights if cfg.get("weights") is not None else cfg.utility.weights
        weights = OmegaConf.to_container(chosen, resolve=True)
        args = [
            sys.executable,
            str(Path(__file__).with_name("export.py")),
            f"ckpt_path={given}",
            f"output={target}",
            f"weights={{{', '.join(f'{k}: {v}' for k, v in weights.items())}}}",
            f"hydra.run.dir={Path(cfg.paths.output_dir) / 'export'}",
        ]
        log.info("%s has no artifact: exporting it to %s", given, target)
        subprocess.run(args, check=True)
    else:
        _warn_if_stale(given, target)
    return target


def _warn_if_stale(run: Path, artifact: Path) -> None:
    """A run folder whose best checkpoint is not the one its artifact was exported from (trained on since)."""
    import json

    from mtrank.serving.files import sha256_file

    metrics = run / "metrics.json"
    if not metrics.is_file() or target_is_artifact(run):
        return
    best = json.loads(metrics.read_text()).get("best_checkpoint")
    source = json.loads((artifact / "manifest.json").read_text()).get("source", {})
    ckpt = run / "checkpoints" / Path(best).name if best else None
    if ckpt is not None and ckpt.is_file() and sha256_file(ckpt) != source.get("checkpoint_sha256"):
        log.warning(
            "%s was exported from another checkpoint than the run's best one (%s): re-export it with "
            "`python src/export.py ckpt_path=%s` to serve the newer model",
            artifact,
            ckpt,
            run,
        )


def target_is_artifact(path: Path) -> bool:
    return (path / "manifest.json").is_file()


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    import torch
    import uvicorn

    from mtrank.serving.app import ServeSettings, create_app

    torch.set_num_threads(int(cfg.threads))
    settings = ServeSettings(
        artifact=str(_artifact_dir(cfg)),
        device=str(cfg.device),
        max_body_bytes=int(cfg.max_body_bytes),
        max_candidates=int(cfg.max_candidates),
        max_batch_requests=int(cfg.max_batch_requests),
        allow_reload=bool(cfg.allow_reload),
    )
    app = create_app(settings)
    # log_config=None: keep Hydra's logging (console + the run folder's serve.log)
    uvicorn.run(
        app,
        host=str(cfg.host),
        port=int(cfg.port),
        log_config=None,
        log_level=str(cfg.log_level),
        access_log=bool(cfg.access_log),
    )


if __name__ == "__main__":
    main()
