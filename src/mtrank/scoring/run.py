"""A trained run as a scorer: its folder, best checkpoint, calibration and preprocessing.

A *run* is a training run folder (``logs/<task_name>/runs/<time>/``) or a checkpoint inside it. From it come the
model (the best checkpoint, loaded with ``weights_only=True``), the downsampling correction and post-hoc
calibrators (``calibration.json``, :mod:`mtrank.calibration`) and the preprocessing the model was trained with
(``preprocessing/``: the processed data's ``metadata.json`` and vocabularies).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from mtrank.calibration.downsampling import downsampling_from_metadata
from mtrank.calibration.run_calibration import CALIBRATION_FILE, Calibration
from mtrank.data.config import PipelineConfig
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import METADATA_FILE, ProcessedData
from mtrank.data.spec import FeatureSpec
from mtrank.scoring.schema import (
    RAW_SCHEMA_FILE,
    raw_schema,
)
from mtrank.training.module import RankingModule
from mtrank.training.safe_load import DATAMODULE_TARGETS, check_checkpoint, check_config_targets
from mtrank.utils.checkpoint_files import read_checkpoint

log = logging.getLogger(__name__)


PREPROCESSING_DIR = "preprocessing"


@dataclass
class LoadedRun:
    """A trained run, ready to score."""

    model: RankingModule
    ckpt_path: Path
    run_dir: Path
    calibration: Calibration
    train_config: DictConfig | None  # the run's resolved config.yaml, when present
    preprocessing: ProcessedData | None  # metadata (+ vocabularies) the model was trained with

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    def processed_data(self) -> ProcessedData:
        """The processed data set the run was trained on (re-made from its config if the cache was removed)."""
        if self.train_config is None or "data" not in self.train_config:
            raise FileNotFoundError(
                f"run {self.run_dir} has no config.yaml with a data section: pass processed_dir= or inputs= to score"
            )
        import hydra

        check_config_targets(self.train_config.data, "data", DATAMODULE_TARGETS, self.run_dir / "config.yaml")
        dm = hydra.utils.instantiate(self.train_config.data, _recursive_=False)
        dm.prepare_data()
        return dm.processed

    def encoder(self) -> FeatureEncoder:
        if self.preprocessing is None:
            raise FileNotFoundError(f"run {self.run_dir} has no preprocessing metadata to encode raw logs with")
        return self.preprocessing.encoder()

    def pipeline_config(self) -> PipelineConfig:
        if self.preprocessing is None:
            raise FileNotFoundError(f"run {self.run_dir} has no preprocessing metadata to read raw logs with")
        return PipelineConfig.from_mapping(self.preprocessing.metadata["config"])


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _resolve_ckpt(path: Path) -> tuple[Path, Path]:
    """(checkpoint, run folder) from a checkpoint file or a run folder.

    A run folder is self-contained and may be moved or copied: its checkpoint is looked for inside it only (the
    best checkpoint named by ``metrics.json``, by its name under ``checkpoints/`` or its path relative to the run
    folder, then the newest ``checkpoints/*.ckpt``, then ``last.ckpt``). An absolute path in ``metrics.json``
    that points outside the folder (the folder it was copied from) is never loaded: when nothing is inside, the
    error names it.
    """
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, run_dir
    if not path.is_dir():
        raise FileNotFoundError(f"ckpt_path={path} is neither a checkpoint file nor a run folder")
    run_dir = path
    ckpt_dir = run_dir / "checkpoints"
    metrics = run_dir / "metrics.json"
    best = None
    if metrics.exists():
        try:
            best = json.loads(metrics.read_text()).get("best_checkpoint")
        except ValueError:
            log.warning("%s is not valid JSON: its best checkpoint is unknown, looking in %s", metrics, ckpt_dir)
    outside = None
    if best:
        named = Path(best)
        cands = [ckpt_dir / named.name]
        if not named.is_absolute():
            cands.insert(0, run_dir / named)
        elif _inside(named, run_dir):
            cands.insert(0, named)
        else:
            outside = named
        for cand in cands:
            if cand.is_file():
                return cand, run_dir
    found = sorted((p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found and (ckpt_dir / "last.ckpt").is_file():
        found = [ckpt_dir / "last.ckpt"]
    if found:
        if best:
            log.warning(
                "%s names the best checkpoint %s, which is not in %s: loading %s instead",
                metrics,
                best,
                ckpt_dir,
                found[-1],
            )
        return found[-1], run_dir
    hint = ""
    if outside is not None:
        hint = (
            f"; its metrics.json names {outside}, outside this folder (the run folder it was copied from?), "
            f"which is not loaded: pass ckpt_path={outside} to score with that checkpoint"
            + ("" if outside.is_file() else " (it does not exist either)")
        )
    raise FileNotFoundError(f"run folder {run_dir} holds no checkpoint (looked in {ckpt_dir}){hint}")


def _processed_from_config(cfg: DictConfig, run_dir: Path) -> ProcessedData | None:
    """The processed data the run was trained on, found from config.yaml + run_info.json (older runs)."""
    info_path = run_dir / "run_info.json"
    try:
        key = json.loads(info_path.read_text())["data"]["processed_key"]
        directory = Path(cfg.data.processed_dir) / f"{cfg.data.pipeline.name}-{key}"
        return ProcessedData.load(directory)
    except Exception:  # noqa: BLE001 - any missing piece means: not found
        return None


def load_run(run: str | Path, calibration: Calibration | str | Path | None = None, device: str = "cpu") -> LoadedRun:
    """Load a run from its folder or one of its checkpoints.

    ``calibration``: a :class:`Calibration`, a path to a calibration JSON, or None for the run's own
    ``calibration.json`` (or, without one, the correction recorded in the checkpoint alone).
    """
    ckpt, run_dir = _resolve_ckpt(Path(run).expanduser())
    cfg_path = run_dir / "config.yaml"
    train_cfg = OmegaConf.load(cfg_path) if cfg_path.exists() else None
    pre = None
    if (run_dir / PREPROCESSING_DIR / METADATA_FILE).exists():
        pre = ProcessedData.load(run_dir / PREPROCESSING_DIR)
    elif train_cfg is not None and "data" in train_cfg:
        pre = _processed_from_config(train_cfg, run_dir)
        if pre is not None:
            log.warning(
                "%s has no %s/: reading the preprocessing from %s, outside the run folder (found from its "
                "config.yaml and run_info.json)",
                run_dir,
                PREPROCESSING_DIR,
                pre.directory,
            )
    read_checkpoint(ckpt)  # an InputFileError naming ckpt_path: missing, empty, no checkpoint, pickled objects
    check_checkpoint(ckpt)  # UnsafeCheckpointError before anything is instantiated from it
    try:
        model = RankingModule.load_from_checkpoint(ckpt, map_location=device, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"could not load the checkpoint {ckpt} as a RankingModule: {exc}") from exc
    if model.hparams.get("downsampling") is None and pre is not None and pre.metadata.get("counts"):
        # a checkpoint from before the correction was recorded in the model: take it from the data's counts
        model = RankingModule.load_from_checkpoint(
            ckpt, map_location=device, weights_only=True, downsampling=downsampling_from_metadata(pre.metadata)
        )
        log.info("%s records no downsampling: β_t per head taken from its processed data's counts", ckpt)
    model.eval()
    if isinstance(calibration, (str, Path)):
        calibration = Calibration.load(calibration)
    elif calibration is None and (run_dir / CALIBRATION_FILE).exists():
        calibration = Calibration.load(run_dir / CALIBRATION_FILE)
    elif calibration is None:
        log.warning(
            "%s has no %s: applying only the downsampling correction recorded in the checkpoint (Eq. 3 with "
            "its β_t), no post-hoc calibrator; the probabilities differ from the run's calibrated ones if it "
            "fitted any. Pass calibration_file= to apply one",
            run_dir,
            CALIBRATION_FILE,
        )
    model.set_calibration(calibration)
    return LoadedRun(model, ckpt, run_dir, model.calibration, train_cfg, pre)


def save_preprocessing(processed: ProcessedData, run_dir: Path | str) -> Path:
    """Copy the processed data's metadata.json and vocabularies into ``run_dir/preprocessing`` (no shards),
    so that a run folder alone can score raw logs; with them ``raw_schema.json``, the columns and dtypes of the
    raw files it was made from (:func:`mtrank.scoring.schema.raw_schema`), against which scored logs are
    checked for drift."""
    import shutil

    out = Path(run_dir) / PREPROCESSING_DIR
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / METADATA_FILE).write_text(json.dumps(dict(processed.metadata), indent=2))
    for f in processed.metadata["features"]["categorical"]:
        dst = tmp / f["vocab_file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(processed.directory / f["vocab_file"], dst)
    try:
        (tmp / RAW_SCHEMA_FILE).write_text(json.dumps(raw_schema(processed.metadata.get("config") or {}), indent=2))
    except Exception as exc:  # noqa: BLE001 - the raw files may have moved since; scoring then checks less
        log.info(
            "Could not record the raw files' schema in %s (%s): scored logs will be checked against the "
            "vocabularies' dtypes only",
            out,
            exc,
        )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _spec_summary(spec: FeatureSpec) -> dict:
    return {
        "tasks": list(spec.tasks),
        "categorical": {c.name: c.cardinality for c in spec.categorical},
        "numeric": list(spec.numeric),
    }


def check_compatible(run: LoadedRun, data: ProcessedData) -> None:
    """The data must be encoded the way the model was trained: same tasks, features, vocabularies, statistics.

    Raises :class:`DataValidationError` that names the data folder, the run and what differs.
    """
    model_spec, data_spec = _spec_summary(run.spec), _spec_summary(data.spec)
    where = f"data {data.directory} cannot be scored with the checkpoint {run.ckpt_path}"
    diffs = []
    if model_spec["tasks"] != data_spec["tasks"]:
        diffs.append(f"tasks: the model has {model_spec['tasks']}, the data {data_spec['tasks']}")
    if model_spec["categorical"] != data_spec["categorical"]:
        diffs.append(
            f"categorical features (name: vocabulary size): the model has {model_spec['categorical']}, "
            f"the data {data_spec['categorical']}"
        )
    if model_spec["numeric"] != data_spec["numeric"]:
        diffs.append(f"numeric features: the model has {model_spec['numeric']}, the data {data_spec['numeric']}")
    if (
        not diffs
        and run.preprocessing is not None
        and run.preprocessing.metadata.get("key") != data.metadata.get("key")
    ):
        diffs += _encoding_differences(run.preprocessing, data)
    elif not diffs and run.preprocessing is None:
        log.warning(
            "run %s has no preprocessing metadata: only the shapes of %s were checked", run.run_dir, data.directory
        )
    if diffs:
        raise DataValidationError(
            f"{where}: it was processed with other metadata. "
            + "; ".join(diffs)
            + ". Evaluate on the data the run was trained on (the default), or score raw logs with inputs=… "
            "so that they are encoded with the run's preprocessing."
        )


def _encoding_differences(train: ProcessedData, data: ProcessedData) -> list[str]:
    out = []
    tf, df = train.metadata["features"], data.metadata["features"]
    tnum = {f["name"]: f for f in tf["numeric"]}
    for f in df["numeric"]:
        t = tnum.get(f["name"])
        if t and (
            t["transform"] != f["transform"]
            or not np.isclose(t["mean"], f["mean"])
            or not np.isclose(t["std"], f["std"])
        ):
            out.append(
                f"numeric '{f['name']}' is normalised with mean/std {f['mean']:.6g}/{f['std']:.6g}, "
                f"the model's with {t['mean']:.6g}/{t['std']:.6g}"
            )
    for f in df["categorical"]:
        a = pl.read_parquet(train.directory / f["vocab_file"]).select("value", "index")
        b = pl.read_parquet(data.directory / f["vocab_file"]).select("value", "index")
        if a.schema != b.schema or not a.equals(b):
            out.append(f"categorical '{f['name']}' has another vocabulary (value → index) than the model's")
    return out


def resolve_device(name: str | None) -> str:
    if not name or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)
