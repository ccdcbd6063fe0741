"""Score data with a trained run: the library behind ``src/predict.py`` and ``src/eval.py``.

A *run* is a training run folder (``logs/<task_name>/runs/<time>/``) or a checkpoint inside it. From it come
the model (the best checkpoint, loaded with ``weights_only=True``), the downsampling correction and post-hoc
calibrators (``calibration.json``, :mod:`mtrank.calibration`) and the preprocessing the model was trained with
(``preprocessing/``: the processed data's ``metadata.json`` and vocabularies).

Public API
----------
* :func:`predict_frame` ``(run, *, split="test", processed_dir=None, inputs=None, calibration=None,
  batch_size=65536, device="cpu") -> polars.DataFrame``: the predictions frame (below) of a split of the
  run's processed data, of another processed data set with the same preprocessing, or of raw logs.
* :func:`load_run`, :func:`score_split`, :func:`score_logs`, :func:`check_compatible`,
  :func:`fit_calibration`: the pieces; :func:`iter_score_split` yields the predictions frame of a split batch by
  batch (what the training report and the calibration fit use, so that their memory does not grow with the
  split).

The predictions frame (also the ``predictions.parquet`` that eval and predict write)::

    request_id      Int64
    item_id         Int64
    label_<task>    UInt8     when the data has labels
    p_raw_<task>    Float32   the model's score, on the downsampled scale of the train split
    p_<task>        Float32   corrected (Eq. 3) and calibrated: what utility, tuning and A/B use
    p_true_<task>   Float32   when the data has the simulator's true probabilities

Rows keep the order of the data (processed shards in order; raw logs in file order).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from mtrank.calibration import CALIBRATION_FILE, FIT_BINS, BinnedLabels, Calibration, downsampling_from_metadata
from mtrank.data import sources, validation
from mtrank.data.config import PipelineConfig
from mtrank.data.dataset import ShardStream
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import METADATA_FILE, ProcessedData
from mtrank.data.spec import CAT_PREFIX, ITEM_COL, NUM_PREFIX, REQUEST_COL, FeatureSpec
from mtrank.models.ranker import RankingModule
from mtrank.utils.io import atomic_write
from mtrank.validation.scoring import RAW_SCHEMA_FILE, check_columns, extra_columns, raw_schema, unseen_problems

log = logging.getLogger(__name__)

PREPROCESSING_DIR = "preprocessing"
PREDICTIONS_FILE = "predictions.parquet"
# default of score_logs' warn_unseen_fraction (predict: conf/predict.yaml): warn when a categorical column has more
# than this share of rows with values never seen in training
WARN_UNSEEN_FRACTION = 0.01

__all__ = [
    "PREDICTIONS_FILE",
    "PREPROCESSING_DIR",
    "LoadedRun",
    "ScoreInfo",
    "check_compatible",
    "fit_calibration",
    "iter_score_split",
    "load_run",
    "predict",
    "predict_frame",
    "save_preprocessing",
    "score_logs",
    "score_split",
    "write_parquet_atomic",
]


# --------------------------------------------------------------------------------------------- the run


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


def _resolve_ckpt(path: Path) -> tuple[Path, Path]:
    """(checkpoint, run folder) from a checkpoint file or a run folder."""
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, run_dir
    if not path.is_dir():
        raise FileNotFoundError(f"ckpt_path={path} is neither a checkpoint file nor a run folder")
    run_dir = path
    ckpt_dir = run_dir / "checkpoints"
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        best = json.loads(metrics.read_text()).get("best_checkpoint")
        if best:
            for cand in (Path(best), ckpt_dir / Path(best).name):  # the run folder may have moved
                if cand.is_file():
                    return cand, run_dir
    found = sorted((p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1], run_dir
    if (ckpt_dir / "last.ckpt").is_file():
        return ckpt_dir / "last.ckpt", run_dir
    raise FileNotFoundError(f"run folder {run_dir} holds no checkpoint (looked in {ckpt_dir})")


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
    try:
        model = RankingModule.load_from_checkpoint(ckpt, map_location=device, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"could not load the checkpoint {ckpt} as a RankingModule: {exc}") from exc
    if model.hparams.get("downsampling") is None and pre is not None and pre.metadata.get("counts"):
        # a checkpoint from before the correction was recorded in the model: take it from the data's counts
        model = RankingModule.load_from_checkpoint(ckpt, map_location=device, weights_only=True,
                                                   downsampling=downsampling_from_metadata(pre.metadata))
        log.info("%s records no downsampling: β_t per head taken from its processed data's counts", ckpt)
    model.eval()
    if isinstance(calibration, (str, Path)):
        calibration = Calibration.load(calibration)
    elif calibration is None and (run_dir / CALIBRATION_FILE).exists():
        calibration = Calibration.load(run_dir / CALIBRATION_FILE)
    elif calibration is None:
        log.info("%s has no %s: applying the downsampling correction from the checkpoint only", run_dir, CALIBRATION_FILE)
    model.set_calibration(calibration)
    return LoadedRun(model, ckpt, run_dir, model.calibration, train_cfg, pre)


def save_preprocessing(processed: ProcessedData, run_dir: Path | str) -> Path:
    """Copy the processed data's metadata.json and vocabularies into ``run_dir/preprocessing`` (no shards),
    so that a run folder alone can score raw logs; with them ``raw_schema.json``, the columns and dtypes of the
    raw files it was made from (:func:`mtrank.validation.scoring.raw_schema`), against which scored logs are
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
        log.info("Could not record the raw files' schema in %s (%s): scored logs will be checked against the "
                 "vocabularies' dtypes only", out, exc)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


# --------------------------------------------------------------------------------------------- compatibility


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
    if not diffs and run.preprocessing is not None and run.preprocessing.metadata.get("key") != data.metadata.get("key"):
        diffs += _encoding_differences(run.preprocessing, data)
    elif not diffs and run.preprocessing is None:
        log.warning("run %s has no preprocessing metadata: only the shapes of %s were checked", run.run_dir, data.directory)
    if diffs:
        raise DataValidationError(
            f"{where}: it was processed with other metadata. " + "; ".join(diffs)
            + ". Evaluate on the data the run was trained on (the default), or score raw logs with inputs=… "
            "so that they are encoded with the run's preprocessing."
        )


def _encoding_differences(train: ProcessedData, data: ProcessedData) -> list[str]:
    out = []
    tf, df = train.metadata["features"], data.metadata["features"]
    tnum = {f["name"]: f for f in tf["numeric"]}
    for f in df["numeric"]:
        t = tnum.get(f["name"])
        if t and (t["transform"] != f["transform"] or not np.isclose(t["mean"], f["mean"]) or not np.isclose(t["std"], f["std"])):
            out.append(f"numeric '{f['name']}' is normalised with mean/std {f['mean']:.6g}/{f['std']:.6g}, "
                       f"the model's with {t['mean']:.6g}/{t['std']:.6g}")
    for f in df["categorical"]:
        a = pl.read_parquet(train.directory / f["vocab_file"]).select("value", "index")
        b = pl.read_parquet(data.directory / f["vocab_file"]).select("value", "index")
        if a.schema != b.schema or not a.equals(b):
            out.append(f"categorical '{f['name']}' has another vocabulary (value → index) than the model's")
    return out


# --------------------------------------------------------------------------------------------- scoring


@dataclass
class ScoreInfo:
    """What scoring found: rows, per categorical column the values mapped to the OOV bucket (count and share of
    the rows), duplicated impressions (scored, not dropped) and the columns ignored as extra."""

    rows: int = 0
    unseen: dict[str, int] = field(default_factory=dict)  # non-null values absent from the train vocabulary
    nulls: dict[str, int] = field(default_factory=dict)  # null values (also OOV)
    has_labels: bool = False
    has_p_true: bool = False
    source: str = ""
    unseen_fraction: dict[str, float] = field(default_factory=dict)  # unseen / rows per categorical column
    duplicates: dict[str, int] = field(default_factory=dict)  # file -> rows that are exact copies of an earlier row
    extra_columns: list[str] = field(default_factory=list)  # columns the training files did not have (ignored)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "oov_unseen": self.unseen, "oov_unseen_fraction": self.unseen_fraction,
                "oov_null": self.nulls, "duplicate_rows": sum(self.duplicates.values()),
                "duplicate_rows_per_file": self.duplicates, "extra_columns": self.extra_columns,
                "has_labels": self.has_labels, "has_p_true": self.has_p_true, "source": self.source}


@torch.inference_mode()
def _logits(model: RankingModule, batches: Iterable[Mapping[str, torch.Tensor]], device) -> Iterable:
    for batch in batches:
        x = {k: batch[k].to(device) for k in ("categorical", "numeric")}
        yield batch, model(x).float()


def _frame(
    tasks: Sequence[str],
    request_id: np.ndarray,
    item_id: np.ndarray,
    p_raw: np.ndarray,
    p: np.ndarray,
    labels: np.ndarray | None,
    p_true: np.ndarray | None,
) -> pl.DataFrame:
    cols: dict[str, pl.Series] = {
        REQUEST_COL: pl.Series(REQUEST_COL, request_id, dtype=pl.Int64),
        ITEM_COL: pl.Series(ITEM_COL, item_id, dtype=pl.Int64),
    }
    for j, t in enumerate(tasks):
        if labels is not None:
            cols[f"label_{t}"] = pl.Series(f"label_{t}", labels[:, j], dtype=pl.UInt8)
    for j, t in enumerate(tasks):
        cols[f"p_raw_{t}"] = pl.Series(f"p_raw_{t}", p_raw[:, j], dtype=pl.Float32)
    for j, t in enumerate(tasks):
        cols[f"p_{t}"] = pl.Series(f"p_{t}", p[:, j], dtype=pl.Float32)
    if p_true is not None:
        for j, t in enumerate(tasks):
            cols[f"p_true_{t}"] = pl.Series(f"p_true_{t}", p_true[:, j], dtype=pl.Float32)
    return pl.DataFrame(list(cols.values()))


def _scored_frames(run: LoadedRun, batches: Iterable[Mapping[str, torch.Tensor]], device: str) -> Iterator[pl.DataFrame]:
    """One predictions frame per batch (at least one frame: an empty one when there are no batches)."""
    model = run.model.to(device)
    T = len(run.tasks)
    empty = True
    for batch, logits in _logits(model, batches, device):
        empty = False
        yield _frame(
            run.tasks,
            batch["request_id"].numpy().astype(np.int64),
            batch["item_id"].numpy().astype(np.int64),
            model.task_probabilities(logits).cpu().numpy(),
            model.calibrated_probabilities(logits).cpu().numpy(),
            batch["labels"].numpy() if "labels" in batch else None,
            batch["p_true"].numpy() if "p_true" in batch else None,
        )
    if empty:
        z = np.zeros((0, T))
        yield _frame(run.tasks, np.zeros(0, np.int64), np.zeros(0, np.int64), z, z, None, None)


def _score_batches(run: LoadedRun, batches: Iterable[Mapping[str, torch.Tensor]], device: str) -> pl.DataFrame:
    return pl.concat(list(_scored_frames(run, batches, device)), how="vertical", rechunk=True)


def iter_score_split(
    run: LoadedRun, data: ProcessedData, split: str = "test", batch_size: int = 65_536, device: str = "cpu"
) -> Iterator[pl.DataFrame]:
    """The predictions frame of one split, ``batch_size`` rows at a time, in the order of the data (checked
    against the run first, before the first frame is asked for)."""
    if split not in data.metadata["splits"]:
        raise KeyError(f"split='{split}': the processed data {data.directory} has splits {list(data.metadata['splits'])}")
    check_compatible(run, data)
    stream = ShardStream(data.files(split), data.spec, batch_size, shuffle=False,
                         chunk_rows=int(data.metadata["config"]["row_group_size"]))
    return _scored_frames(run, iter(stream), device)


def score_split(
    run: LoadedRun, data: ProcessedData, split: str = "test", batch_size: int = 65_536, device: str = "cpu"
) -> pl.DataFrame:
    """The predictions frame of one split of a processed data set (checked against the run first)."""
    return pl.concat(list(iter_score_split(run, data, split, batch_size, device)), how="vertical", rechunk=True)


def _trained_columns(run: LoadedRun, encoder: FeatureEncoder) -> tuple[dict[str, list[str]], bool]:
    """Column → the dtypes it had in the training files, and whether that is the full record
    (``preprocessing/raw_schema.json``) or, for runs without it, the categorical vocabularies' dtypes only."""
    path = run.run_dir / PREPROCESSING_DIR / RAW_SCHEMA_FILE
    if path.is_file():
        return {str(c): list(d) for c, d in json.loads(path.read_text())["columns"].items()}, True
    return {c: [str(encoder.dtypes[c])] for c in encoder.categorical if encoder.dtypes.get(c)}, False


def _read_raw(run: LoadedRun, inputs: Sequence[str | Path]) -> tuple[pl.DataFrame, ScoreInfo]:
    """Raw log files → encoded frame (ids, cat__/num__ columns, labels and p_true when present).

    The checks and casts are the pipeline's (:mod:`mtrank.data.validation`, :mod:`mtrank.data.reading`), except
    that label columns are optional and categorical columns take the dtype of the run's vocabulary.
    """
    from mtrank.data import pipeline as pp
    from mtrank.data import reading

    cfg = run.pipeline_config()
    encoder = run.encoder()
    cols = cfg.columns
    files = sources.resolve_inputs([str(i) for i in inputs], "inputs")
    cats, nums = reading.impression_columns(cfg)
    roles = validation.column_roles(cols, [], cats, nums)  # labels are optional when predicting
    if cols.time and cols.time not in cats + nums:
        roles.pop(cols.time, None)  # the time column is not needed to score
    for t in cfg.side_tables:
        roles.setdefault(t.on, validation.Role("id", f"{t.key}.on"))
    label_cols = [cols.labels[t] for t in cfg.tasks]
    ptrue_cols = [cols.p_true_prefix + t for t in cfg.tasks] if cols.p_true_prefix else []
    ids = [c for c in (cols.request_id, cols.item_id) if c]
    code_like = list(dict.fromkeys(cats + ids + [t.on for t in cfg.side_tables]))
    trained, recorded = _trained_columns(run, encoder)
    optional = {c: "label" for c in label_cols} | {c: "p_true" for c in ptrue_cols}
    scanned = []
    for path in files:
        lf = sources.scan(path)
        schema = lf.collect_schema()
        if lf.head(1).collect().height == 0:  # before the dtypes: a CSV with a header only reads as strings
            raise DataValidationError(f"file {path} holds no rows (a header or an empty table): nothing to score")
        check_columns(path, schema, roles, optional, trained, run.run_dir)  # drift from the training files
        validation.check_schema(path, schema, roles)
        scanned.append((path, lf, schema))
    schemas = [sc for _, _, sc in scanned]
    partial = [c for c in label_cols if any(c in sc for sc in schemas) and not all(c in sc for sc in schemas)]
    if partial:
        raise DataValidationError(
            f"label column(s) {partial} are in some input files but not all ({[str(f) for f in files]}); "
            "give either labelled or unlabelled logs"
        )
    has_labels = all(all(c in sc for c in label_cols) for sc in schemas)
    has_p_true = bool(ptrue_cols) and all(all(c in sc for c in ptrue_cols) for sc in schemas)
    duplicates: dict[str, int] = {}
    for path, lf, schema in scanned:  # one pass per file: rows > 0, labels, ids, NaN policy, duplicated rows
        report = validation.inspect_file(
            path, lf, label_cols if has_labels else [], nums, ids, cfg.encoding.nan_policy,
            code_cols=validation.float_code_columns(schema, code_like), count_duplicates=True,
        )
        if report.duplicates:
            duplicates[str(path)] = int(report.duplicates)
    casts = {c: validation.unify_categorical_dtype([sc[c] for sc in schemas]) for c in code_like}
    for c in cats:  # the vocabulary decides: an integer vocabulary cannot look up strings
        want = pl.Int64 if encoder.dtypes.get(c) == "Int64" else pl.String
        if want == pl.Int64 and casts[c] != pl.Int64:
            raise DataValidationError(
                f"categorical column '{c}' holds strings in {[str(f) for f in files]}, but the run's vocabulary "
                "holds integers: the logs do not match the data the model was trained on"
            )
        casts[c] = want
    keep = list(dict.fromkeys(code_like + nums + (label_cols if has_labels else []) + (ptrue_cols if has_p_true else [])))
    selected = []
    for _, lf, schema in scanned:
        exprs = []
        for c in keep:
            if c in casts:
                exprs.append(validation.categorical_cast(c, schema[c], casts[c]).alias(c))
            elif c in label_cols:
                exprs.append(pl.col(c).cast(pl.UInt8))
            else:
                exprs.append(pl.col(c).cast(pl.Float64))
        selected.append(lf.select(exprs))
    raw = pl.concat(selected, how="vertical")
    if cfg.side_tables:
        side_files = [sources.resolve_inputs([t.path], f"{t.key}.path")[0] for t in cfg.side_tables]
        side = reading.read_side_tables(cfg, side_files, casts, keep)
        raw = reading.join_side_tables(raw, side)
    raw = raw.with_row_index(pp._ROW).with_columns(
        pp._id_expr(cols.request_id, casts).alias(REQUEST_COL), pp._id_expr(cols.item_id, casts).alias(ITEM_COL)
    )
    raw = raw.collect()
    if cfg.side_tables:
        raw = reading.drop_markers(raw)
    info = ScoreInfo(rows=raw.height, has_labels=has_labels, has_p_true=has_p_true, source=", ".join(map(str, files)),
                     duplicates=duplicates, extra_columns=extra_columns(schemas, trained) if recorded else [])
    for c in encoder.categorical:
        vocab = encoder.vocabularies[c]["value"]
        col = raw[c].cast(pl.String) if encoder.dtypes[c] == "String" else raw[c].cast(pl.Int64)
        info.nulls[c] = int(col.null_count())
        info.unseen[c] = int((col.is_not_null() & ~col.is_in(vocab.cast(col.dtype).implode())).sum())
        info.unseen_fraction[c] = info.unseen[c] / max(raw.height, 1)
    extra = []
    if has_labels:
        extra += [pl.col(cols.labels[t]).alias(f"__label_{t}") for t in cfg.tasks]
    if has_p_true:
        extra += [pl.col(cols.p_true_prefix + t).alias(f"__ptrue_{t}") for t in cfg.tasks]
    encoded = raw.select(pl.col(REQUEST_COL), pl.col(ITEM_COL), *encoder.expressions(), *extra)
    return encoded, info


def _frame_batches(run: LoadedRun, df: pl.DataFrame, info: ScoreInfo, batch_size: int) -> Iterable[dict]:
    spec = run.spec
    cat_cols = [CAT_PREFIX + c.name for c in spec.categorical]
    num_cols = [NUM_PREFIX + n for n in spec.numeric]
    missing = [c for c in cat_cols + num_cols if c not in df.columns]
    if missing:
        raise DataValidationError(f"the run's preprocessing does not produce the model's features {missing}")
    tasks = run.tasks
    for start in range(0, df.height, batch_size):
        part = df.slice(start, batch_size)
        n = part.height
        b = {
            "categorical": torch.from_numpy(part.select(cat_cols).to_numpy().astype(np.int64)) if cat_cols
            else torch.zeros((n, 0), dtype=torch.int64),
            "numeric": torch.from_numpy(part.select(num_cols).to_numpy().astype(np.float32)) if num_cols
            else torch.zeros((n, 0), dtype=torch.float32),
            "request_id": torch.from_numpy(part[REQUEST_COL].to_numpy().astype(np.int64)),
            "item_id": torch.from_numpy(part[ITEM_COL].to_numpy().astype(np.int64)),
        }
        if info.has_labels:
            b["labels"] = torch.from_numpy(part.select([f"__label_{t}" for t in tasks]).to_numpy().astype(np.float32))
        if info.has_p_true:
            b["p_true"] = torch.from_numpy(part.select([f"__ptrue_{t}" for t in tasks]).to_numpy().astype(np.float32))
        yield b


def score_logs(
    run: LoadedRun,
    inputs: str | Path | Sequence[str | Path],
    batch_size: int = 65_536,
    device: str = "cpu",
    *,
    warn_unseen_fraction: float = WARN_UNSEEN_FRACTION,
    max_unseen_fraction: float | None = None,
) -> tuple[pl.DataFrame, ScoreInfo]:
    """Score raw logs (Parquet/CSV files, folders or globs) with the run's preprocessing.

    Columns are checked as the pipeline checks them (:mod:`mtrank.data.validation`) and against the columns the
    run was trained on (:mod:`mtrank.validation.scoring`: a missing or retyped column is an error, an extra one
    is ignored and logged); label columns are optional; an empty file is an error. Duplicated rows are counted
    and scored like the others (a warning says how many). Values never seen in training go to the OOV bucket
    (index 0): their count and share of the rows per column are in the returned :class:`ScoreInfo`, logged as
    a warning when a share is above ``warn_unseen_fraction``; above ``max_unseen_fraction`` (when set) nothing
    is scored and :class:`DataValidationError` says which column.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if run.preprocessing is not None and run.preprocessing.spec.tasks != tuple(run.tasks):
        raise DataValidationError(
            f"run {run.run_dir}: its preprocessing has tasks {list(run.preprocessing.spec.tasks)} but the model {run.tasks}"
        )
    df, info = _read_raw(run, inputs)
    _report_inputs(run, info, warn_unseen_fraction, max_unseen_fraction)
    frame = _score_batches(run, _frame_batches(run, df, info, batch_size), device)
    return frame, info


def _report_inputs(run: LoadedRun, info: ScoreInfo, warn: float, limit: float | None) -> None:
    """Log what reading found; raise when a column's share of never-seen values is above ``limit``."""
    too_many = unseen_problems(info.unseen_fraction, limit)
    if too_many:
        c, f = max(too_many.items(), key=lambda kv: kv[1])
        raise DataValidationError(
            f"column '{c}': {info.unseen[c]} of the {info.rows} rows ({f:.2%}) in {info.source} hold values never seen "
            f"in training by the run {run.run_dir}, above max_unseen_fraction={limit}"
            + (f" (also above it: {sorted(k for k in too_many if k != c)})" if len(too_many) > 1 else "")
            + "; these logs may not be what the run was trained on. Set max_unseen_fraction higher (or null) to score "
            "them anyway, the unseen values going to the OOV bucket"
        )
    if info.extra_columns:
        log.info("Ignoring column(s) %s of %s: the files the run was trained on did not have them",
                 info.extra_columns, info.source)
    if info.duplicates:
        log.warning("%d duplicated impression(s) (rows that are exact copies of an earlier row of the same file) in %s: "
                    "they are scored like the others, not dropped", sum(info.duplicates.values()),
                    ", ".join(f"{f} ({n})" for f, n in info.duplicates.items()))
    shown = {c: f for c, f in info.unseen_fraction.items() if info.unseen.get(c)}
    text = ", ".join(f"{c}: {info.unseen[c]} rows ({f:.2%})" for c, f in shown.items())
    if any(f > warn for f in shown.values()):
        log.warning("%d rows scored; values never seen in training were mapped to the OOV bucket: %s "
                    "(warn_unseen_fraction=%s)", info.rows, text, warn)
    elif shown:
        log.info("%d rows scored; values never seen in training were mapped to the OOV bucket: %s", info.rows, text)
    else:
        log.info("%d rows scored; every categorical value was in the training vocabulary", info.rows)


def predict_frame(
    run: str | Path | LoadedRun,
    *,
    split: str = "test",
    processed_dir: str | Path | None = None,
    inputs: str | Path | Sequence[str | Path] | None = None,
    calibration: Calibration | str | Path | None = None,
    batch_size: int = 65_536,
    device: str = "cpu",
    warn_unseen_fraction: float = WARN_UNSEEN_FRACTION,
    max_unseen_fraction: float | None = None,
) -> pl.DataFrame:
    """The predictions frame of a trained run (see the module docstring for its columns).

    Args:
        run: a training run folder, a checkpoint file in one, or a :class:`LoadedRun`.
        split: which split to score (train | val | test) when scoring processed data.
        processed_dir: a processed data folder (with ``metadata.json``) to score instead of the run's own data;
            it must share the run's preprocessing, else :class:`DataValidationError`.
        inputs: raw log files / folders / globs to score instead (encoded with the run's preprocessing; labels
            optional; unseen ids → OOV, counted and logged; ``warn_unseen_fraction`` and ``max_unseen_fraction``
            as in :func:`score_logs`).
        calibration: override of the run's ``calibration.json`` (a :class:`Calibration` or a path).
    """
    if not isinstance(run, LoadedRun):
        run = load_run(run, calibration=calibration, device=device)
    elif calibration is not None:
        run.model.set_calibration(Calibration.load(calibration) if isinstance(calibration, (str, Path)) else calibration)
        run.calibration = run.model.calibration
    if inputs is not None and processed_dir is not None:
        raise ValueError("give either inputs= (raw logs) or processed_dir= (processed data), not both")
    if inputs is not None:
        return score_logs(run, inputs, batch_size=batch_size, device=device, warn_unseen_fraction=warn_unseen_fraction,
                          max_unseen_fraction=max_unseen_fraction)[0]
    data = ProcessedData.load(processed_dir) if processed_dir is not None else run.processed_data()
    return score_split(run, data, split=split, batch_size=batch_size, device=device)


# --------------------------------------------------------------------------------------------- calibrators


def fit_calibration(run: LoadedRun, data: ProcessedData, method: str, split: str = "val",
                    batch_size: int = 65_536, device: str = "cpu") -> Calibration:
    """Fit one post-hoc calibrator per task on the corrected probabilities of ``split`` and attach it.

    The split is scored batch by batch and summed on the fitting grid (:class:`mtrank.calibration.BinnedLabels`):
    every row counts and the memory does not grow with the split.
    """
    run.model.set_calibration(None)
    tasks = run.tasks
    binned = {t: BinnedLabels() for t in tasks}
    rows = 0
    for frame in iter_score_split(run, data, split=split, batch_size=batch_size, device=device):
        missing = [f"label_{t}" for t in tasks if f"label_{t}" not in frame.columns]
        if missing:
            raise DataValidationError(f"split '{split}' of {data.directory} has no labels {missing} to fit calibrators on")
        for t in tasks:
            binned[t].update(frame[f"p_{t}"].to_numpy(), frame[f"label_{t}"].to_numpy())
        rows += frame.height
    cal = Calibration(tasks=tasks, betas=dict(run.model.calibration.betas), info=dict(run.model.calibration.info))
    cal.fit_binned(binned, method)
    cal.info.update({"fitted_on": {"data": str(data.directory), "split": split, "rows": rows, "bins": FIT_BINS}})
    run.model.set_calibration(cal)
    run.calibration = cal
    return cal


def write_parquet_atomic(df: pl.DataFrame, path: Path | str) -> Path:
    """Write a Parquet file via a temporary file in the same folder and a rename."""
    return atomic_write(path, df.write_parquet)


# --------------------------------------------------------------------------------------------- the job


def _device(name: str | None) -> str:
    if not name or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


def predict(cfg: DictConfig) -> pl.DataFrame:
    """The predict job: score ``inputs`` (or a split of processed data) and write the predictions Parquet and
    ``predict_info.json`` (rows, OOV counts, checkpoint, calibration)."""
    from mtrank.calibration import write_text_atomic
    from mtrank.validation import validate_predict_config

    validate_predict_config(cfg)  # ConfigError naming the key (ckpt_path, split, max_unseen_fraction, ...)
    target = cfg.get("ckpt_path") or cfg.get("run_dir")
    device = _device(cfg.get("device"))
    batch_size = int(cfg.get("batch_size", 65_536))
    run = load_run(target, calibration=cfg.get("calibration_file"), device=device)
    info: ScoreInfo | None = None
    if cfg.get("inputs"):
        inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
        warn = cfg.get("warn_unseen_fraction")
        frame, info = score_logs(run, inputs, batch_size=batch_size, device=device,
                                 warn_unseen_fraction=WARN_UNSEEN_FRACTION if warn is None else float(warn),
                                 max_unseen_fraction=cfg.get("max_unseen_fraction"))
    else:
        data = ProcessedData.load(cfg.processed_dir) if cfg.get("processed_dir") else run.processed_data()
        frame = score_split(run, data, split=str(cfg.get("split", "test")), batch_size=batch_size, device=device)
        info = ScoreInfo(rows=frame.height, has_labels=any(c.startswith("label_") for c in frame.columns),
                         has_p_true=any(c.startswith("p_true_") for c in frame.columns),
                         source=f"{data.directory} [{cfg.get('split', 'test')}]")
    out_dir = Path(cfg.paths.output_dir)
    output = Path(cfg.output) if cfg.get("output") else out_dir / PREDICTIONS_FILE
    write_parquet_atomic(frame, output)
    summary = {
        "predictions": str(output),
        "checkpoint": str(run.ckpt_path),
        "calibration": {"method": run.calibration.method, "betas": run.calibration.betas},
        **info.to_dict(),
        "mean_p": {t: float(frame[f"p_{t}"].mean()) for t in run.tasks} if frame.height else {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "predict_info.json", json.dumps(summary, indent=2))
    unseen = sum(info.unseen.values())
    log.info("Wrote %d predictions to %s (%s); %d categorical value(s) mapped to the OOV bucket",
             frame.height, output, ", ".join(f"p_{t}" for t in run.tasks), unseen)
    return frame
