"""End to end on a small simulated log: training writes the calibration and the report; eval, predict and
predict_frame give the predictions contract; data processed with other metadata is refused; unseen ids → OOV."""

import json
import math

import numpy as np
import polars as pl
import pytest

from helpers import FAST_RUN, compose_config
from mtrank.calibration.run_calibration import Calibration
from mtrank.data.errors import DataValidationError
from mtrank.jobs.evaluate import evaluate
from mtrank.jobs.predict import predict
from mtrank.jobs.train import train
from mtrank.scoring.predict import predict_frame
from mtrank.scoring.run import load_run

TASKS = ["save", "click", "long_click", "closeup"]
FAST = [*FAST_RUN, "trainer.max_epochs=1", "logger=csv", "report.ks=[5]", "report.n_bins=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibrated_run")
    cfg = compose_config("train", ["experiment=multitask", *FAST, "calibration=platt"], tmp)
    metrics = train(cfg)
    return tmp, cfg, metrics


def _check_contract(df: pl.DataFrame, labels: bool, p_true: bool) -> None:
    assert df.schema["request_id"] == pl.Int64 and df.schema["item_id"] == pl.Int64
    for t in TASKS:
        assert df.schema[f"p_raw_{t}"] == pl.Float32 and df.schema[f"p_{t}"] == pl.Float32
        assert (f"label_{t}" in df.columns) == labels
        assert (f"p_true_{t}" in df.columns) == p_true
        if labels:
            assert df.schema[f"label_{t}"] == pl.UInt8
        if p_true:
            assert df.schema[f"p_true_{t}"] == pl.Float32
    for t in TASKS:
        p = df[f"p_{t}"].to_numpy()
        assert np.all((p >= 0) & (p <= 1))


def test_training_writes_calibration_preprocessing_and_report(trained):
    tmp, cfg, metrics = trained
    run = tmp / "run"
    for t in TASKS:
        for m in ("ece", "ece_raw", "brier", "brier_raw", "logloss", "logloss_raw", "auroc", "oracle_auroc"):
            assert math.isfinite(metrics[f"test/{t}/{m}"]), m
    # β = 0.1: the raw scores over-predict; the plain (corrected + calibrated) figures are better
    assert sum(metrics[f"test/{t}/ece"] for t in TASKS) < sum(metrics[f"test/{t}/ece_raw"] for t in TASKS)
    cal = Calibration.load(run)
    assert cal.method == "platt" and all(0.1 < cal.betas[t] < 1 for t in TASKS)
    assert cal.info["fitted_on"]["split"] == "val"
    assert (run / "preprocessing" / "metadata.json").exists()
    df = pl.read_parquet(run / "predictions.parquet")
    _check_contract(df, labels=True, p_true=True)
    assert df.height == json.loads((run / "preprocessing" / "metadata.json").read_text())["splits"]["test"]["rows"]
    summary = json.loads((run / "evaluation.json").read_text())
    for t in TASKS:
        assert {"ece", "ece_raw", "ece_corrected", "ece_true", "mae_true", "ndcg@5", "map", "oracle_ndcg@5"} <= {
            k.split("/")[-1] for k in summary["metrics"] if k.startswith(f"test/{t}/")
        }
        assert len(summary["reliability"]["per_task"][t]["count"]) <= 8
    # the Trainer's test figures and the report's agree (same rows, same probabilities)
    assert summary["metrics"]["test/click/ece"] == pytest.approx(metrics["test/click/ece"], abs=1e-5)
    assert summary["metrics"]["test/click/auroc"] == pytest.approx(metrics["test/click/auroc"], abs=1e-5)
    md = (run / "evaluation.md").read_text()
    assert "| click |" in md and "reliability.png" in md
    assert (run / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_frame_and_load_run(trained):
    tmp, _, _ = trained
    run_dir = tmp / "run"
    frame = predict_frame(run_dir, split="test")
    _check_contract(frame, labels=True, p_true=True)
    written = pl.read_parquet(run_dir / "predictions.parquet")
    np.testing.assert_allclose(frame["p_click"].to_numpy(), written["p_click"].to_numpy(), rtol=1e-6)
    # a checkpoint path works as well, and another calibration can be given
    ckpt = next((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    run = load_run(ckpt)
    assert run.run_dir == run_dir and run.calibration.method == "platt"
    bare = Calibration.from_downsampling(run.model.hparams.downsampling, TASKS, "multitask")
    raw_only = predict_frame(run, split="test", calibration=bare)
    np.testing.assert_allclose(
        raw_only["p_click"].to_numpy(),
        bare.correct(raw_only.select("p_raw_click").to_numpy(), ["click"])[:, 0],
        rtol=1e-5,
    )


def test_eval_job_refits_calibrators_and_logs_to_wandb(trained, tmp_path, monkeypatch):
    tmp, _, _ = trained
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={tmp / 'run'}",
            "calibration=isotonic",
            "report.ks=[3]",
            "report.bins=uniform",
            "report.show_raw=true",
            "report.scale=log",
        ],
        tmp_path,
    )
    logged = {}
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setattr(
        WandbLogger, "log_image", lambda self, key, images, **kw: logged.setdefault("image", (key, images))
    )
    monkeypatch.setattr(
        WandbLogger, "log_metrics", lambda self, metrics, step=None: logged.setdefault("metrics", metrics)
    )
    monkeypatch.setattr(WandbLogger, "save", lambda self: None)
    monkeypatch.setattr(
        "mtrank.utils.instantiate.instantiate_loggers", lambda c: [WandbLogger(offline=True, save_dir=str(tmp_path))]
    )
    metrics = evaluate(cfg)
    out = tmp_path / "run"
    assert Calibration.load(out).method == "isotonic"
    for name in ("predictions.parquet", "evaluation.json", "evaluation.md", "reliability.png", "config.yaml"):
        assert (out / name).exists(), name
    assert "test/save/ece_corrected" in metrics and "test/save/ndcg@3" in metrics
    assert logged["image"][0] == "test/reliability" and logged["image"][1][0].endswith("reliability.png")
    assert "report/test/save/ece" in logged["metrics"]


def test_eval_on_data_with_other_metadata_is_refused(trained, tmp_path):
    import hydra

    tmp, cfg, _ = trained
    for override, match in (("tasks=related_products_ext", "tasks"), ("data.simulator.seed=7", "other metadata")):
        other = compose_config("train", ["experiment=multitask", *FAST, override], tmp_path)
        dm = hydra.utils.instantiate(other.data, _recursive_=False)
        dm.prepare_data()
        eval_cfg = compose_config(
            "eval", [f"ckpt_path={tmp / 'run'}", f"processed_dir={dm.processed.directory}"], tmp_path / "eval"
        )
        with pytest.raises(DataValidationError, match=match) as err:
            evaluate(eval_cfg)
        assert str(dm.processed.directory) in str(err.value)


def _raw_files(cfg):
    from pathlib import Path

    return sorted(Path(cfg.paths.data_dir, "raw").glob("simulated-*/*.parquet"))


def test_predict_raw_logs_maps_unseen_values_to_oov(trained, tmp_path):
    tmp, cfg, _ = trained
    files = _raw_files(cfg)
    raw = pl.concat([pl.read_parquet(f) for f in files])
    labels = ["save", "click", "long_click", "closeup", "hide", "checkout"]
    new = raw.head(3000).drop(labels + [f"p_true_{t}" for t in labels])
    new = new.with_columns(
        pl.when(pl.int_range(pl.len()) < 37)
        .then(pl.lit(10_000, pl.Int32))
        .otherwise(pl.col("user_segment"))
        .alias("user_segment")
    )
    path = tmp_path / "new" / "log.parquet"
    path.parent.mkdir()
    new.write_parquet(path)
    pcfg = compose_config("predict", [f"ckpt_path={tmp / 'run'}", f"inputs={path}"], tmp_path)
    frame = predict(pcfg)
    _check_contract(frame, labels=False, p_true=False)
    info = json.loads((tmp_path / "run" / "predict_info.json").read_text())
    assert info["rows"] == 3000 and info["oov_unseen"]["user_segment"] == 37
    assert info["has_labels"] is False
    assert pl.read_parquet(tmp_path / "run" / "predictions.parquet").equals(frame)


def test_scoring_raw_logs_equals_scoring_processed_data(trained):
    """The same rows scored from the raw files (encoded with the run's preprocessing) and from the shards."""
    tmp, cfg, _ = trained
    from_raw = predict_frame(tmp / "run", inputs=[str(f) for f in _raw_files(cfg)])
    _check_contract(from_raw, labels=True, p_true=True)
    test = pl.read_parquet(tmp / "run" / "predictions.parquet")
    joined = test.join(from_raw, on=["request_id", "item_id"], how="left", suffix="_raw_log")
    assert joined["p_click_raw_log"].null_count() == 0
    for t in TASKS:
        np.testing.assert_allclose(joined[f"p_{t}"].to_numpy(), joined[f"p_{t}_raw_log"].to_numpy(), rtol=1e-5)
        assert (joined[f"label_{t}"] == joined[f"label_{t}_raw_log"]).all()


def test_eval_needs_a_run(tmp_path):
    cfg = compose_config("eval", [], tmp_path)
    with pytest.raises(ValueError, match="ckpt_path"):
        evaluate(cfg)
    cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'nothing'}"], tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing"):
        evaluate(cfg)
