"""Export a trained run to a serving artifact: ``python src/export.py ckpt_path=<run folder or .ckpt>`` (see
conf/export.yaml and README "Serving")."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from mtrank.serving.export import export_run

    target = cfg.get("ckpt_path") or cfg.get("run_dir")
    if not target:
        raise ValueError(
            "ckpt_path is required: a training run folder (logs/<task>/runs/<time>) or a checkpoint in one"
        )
    if cfg.get("weights") is not None:  # explicit weights replace the utility config's
        weights, source = OmegaConf.to_container(cfg.weights, resolve=True), "weights"
    else:
        utility = cfg.get("utility") or {}
        weights = OmegaConf.to_container(utility.weights, resolve=True) if utility.get("weights") is not None else None
        source = f"utility={hydra.core.hydra_config.HydraConfig.get().runtime.choices.get('utility')}"
    out = export_run(
        target,
        cfg.get("output"),
        weights=weights,
        utility_name=source,
        calibration=cfg.get("calibration_file"),
        overwrite=bool(cfg.get("overwrite", True)),
    )
    print(f"artifact: {out}")


if __name__ == "__main__":
    main()
