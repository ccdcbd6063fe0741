"""The corpus of bad raw logs scored with a trained run (tests/corpus/predict/): one test per case, each
asserting its error or its warning and what predict_info.json reports; and the metric names the config
validator allows are exactly those a real run logs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from helpers import compose_config
from mtrank.data.errors import DataValidationError
from mtrank.jobs.predict import predict
from mtrank.scoring.raw_logs import score_logs
from mtrank.scoring.run import PREPROCESSING_DIR, load_run
from mtrank.scoring.schema import RAW_SCHEMA_FILE, compatible, dtype_family
from mtrank.validation import validate_train_config
from validation_helpers import trained_run

CORPUS = Path(__file__).parent / "corpus" / "predict"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())["cases"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_corpus_is_small():
    assert sum(f.stat().st_size for f in CORPUS.iterdir()) < 20_000


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_scoring_a_bad_file(case, run, tmp_path, caplog):
    run_dir = run[0]
    cfg = compose_config(
        "predict", [f"ckpt_path={run_dir}", f"inputs={CORPUS / case['file']}", *(case.get("overrides") or [])], tmp_path
    )
    if "error" in case:
        pattern = case["error"].replace("{run}", re.escape(str(run_dir)))
        with pytest.raises(DataValidationError) as err:
            predict(cfg)
        assert re.search(pattern, str(err.value)), f"\n{err.value}\n  does not match\n{pattern}"
        assert not (tmp_path / "run" / "predictions.parquet").exists()
        return
    with caplog.at_level(logging.INFO, logger="mtrank.scoring.raw_logs"):
        frame = predict(cfg)
    info = json.loads((tmp_path / "run" / "predict_info.json").read_text(), parse_constant=_refuse)
    assert frame.height == info["rows"]
    for c in frame.columns:  # never a NaN probability
        if c.startswith("p_"):
            assert frame[c].is_finite().all(), c
    for k, v in (case.get("info") or {}).items():
        got = info[k]
        if isinstance(v, dict):
            assert {kk: got[kk] for kk in v} == pytest.approx(v), k
        else:
            assert got == v, k
    if "log" in case:
        found = [r for r in caplog.records if re.search(case["log"], r.getMessage())]
        assert found, f"no log record matches {case['log']!r}: {[r.getMessage() for r in caplog.records]}"
        assert found[0].levelname == case["level"]
        assert len(found) == 1, "logged once"


def _refuse(constant):
    raise ValueError(f"bare {constant} in predict_info.json")


def test_training_records_the_raw_schema(run):
    schema = json.loads((run[0] / PREPROCESSING_DIR / RAW_SCHEMA_FILE).read_text())
    assert schema["columns"]["user_segment"] == ["Int32"] and schema["columns"]["price"] == ["Float64"]
    assert len(schema["files"]) == 2


def test_run_without_the_record_falls_back_to_the_vocabularies(run, tmp_path):
    """Runs trained before raw_schema.json existed: categorical retypes are still refused, extras not reported."""
    import shutil

    old = tmp_path / "old_run"
    shutil.copytree(run[0], old, ignore=shutil.ignore_patterns("*.parquet", "csv", "*.png"))
    (old / PREPROCESSING_DIR / RAW_SCHEMA_FILE).unlink()
    for p in (run[0] / PREPROCESSING_DIR / "vocab").glob("*.parquet"):
        shutil.copyfile(p, old / PREPROCESSING_DIR / "vocab" / p.name)
    loaded = load_run(old / "checkpoints" / next(p.name for p in (old / "checkpoints").glob("epoch_*.ckpt")))
    with pytest.raises(
        DataValidationError,
        match=r"column 'user_segment' .* has dtype String, but the run .* was "
        r"trained on Int64",
    ):
        score_logs(loaded, CORPUS / "retyped_categorical.csv")
    frame, info = score_logs(loaded, CORPUS / "extra_columns.csv")
    assert frame.height == 8 and info.extra_columns == []


def test_safe_casts_are_the_pipelines():
    assert compatible("categorical", "Int64", ["Int32"]) and compatible("categorical", "Float64", ["Int32"])
    assert compatible("categorical", "Categorical", ["String"]) and not compatible("categorical", "String", ["Int32"])
    assert compatible("categorical", "String", ["Int64", "String"])  # training files of both kinds
    assert compatible("numeric", "Int64", ["Float64"]) and not compatible("numeric", "String", ["Float64"])
    assert compatible("id", "String", ["Int64"])  # request / item ids: hashed
    assert dtype_family("Datetime(time_unit='us', time_zone=None)") == "temporal"


def test_validator_metric_names_are_what_the_run_logs(run):
    """Every name the validator accepts for optimized_metric is in the run's metrics.json, and every name there
    is accepted; monitors accept the train/ and val/ ones."""
    _, cfg, metrics = run
    catalog = validate_train_config(cfg)
    assert set(catalog.run_names) == set(metrics), (
        f"allowed but not logged: {sorted(set(catalog.run_names) - set(metrics))}; "
        f"logged but not allowed: {sorted(set(metrics) - set(catalog.run_names))}"
    )
    assert catalog.fit_names == {k for k in metrics if k.split("/")[0] in ("train", "val")}
    assert any("/gates/" in k for k in catalog.run_names) and any(k.endswith("_corrected") for k in metrics)
    assert any(k.endswith("/task_weight") for k in catalog.fit_names)


# ------------------------------------------------------------------------------------------ the run folder itself


def _copy_run(run_dir: Path, dest: Path, *, checkpoints: bool) -> Path:
    import shutil

    ignore = (
        shutil.ignore_patterns("checkpoints", "csv", "*.png")
        if not checkpoints
        else shutil.ignore_patterns("csv", "*.png")
    )
    shutil.copytree(run_dir, dest, ignore=ignore)
    return dest


def test_a_copied_run_never_loads_the_original_folders_checkpoint(run, tmp_path):
    """metrics.json holds the absolute path of the best checkpoint in the original folder: a copy without
    checkpoints/ must not silently load it; a copy with them loads its own."""
    best = json.loads((run[0] / "metrics.json").read_text())["best_checkpoint"]
    assert Path(best).is_file() and str(run[0]) in best
    bare = _copy_run(run[0], tmp_path / "bare", checkpoints=False)
    with pytest.raises(
        FileNotFoundError,
        match=rf"run folder {re.escape(str(bare))} holds no checkpoint .*its "
        rf"metrics\.json names {re.escape(best)}, outside this folder .*"
        rf"pass ckpt_path={re.escape(best)}",
    ):
        load_run(bare)
    moved = _copy_run(run[0], tmp_path / "moved", checkpoints=True)
    loaded = load_run(moved)
    assert loaded.ckpt_path.resolve().parent == (moved / "checkpoints").resolve()
    assert loaded.ckpt_path.name == Path(best).name


def test_missing_calibration_file_is_a_warning(run, tmp_path, caplog):
    copy = _copy_run(run[0], tmp_path / "nocal", checkpoints=True)
    (copy / "calibration.json").unlink()
    with caplog.at_level(logging.INFO, logger="mtrank.scoring.run"):
        loaded = load_run(copy)
    found = [r for r in caplog.records if "has no calibration.json" in r.getMessage()]
    assert found and found[0].levelname == "WARNING", [r.getMessage() for r in caplog.records]
    assert "applying only the downsampling correction" in found[0].getMessage()
    assert loaded.calibration.method == "none"


def test_the_runs_metrics_json_is_valid_json(run):
    data = json.loads((run[0] / "metrics.json").read_text(), parse_constant=_refuse)
    assert all(v is None or isinstance(v, (int, float)) for v in data["metrics"].values())
    assert all(data["metrics"][k] is None for k in data["undefined_metrics"])


def test_eval_on_the_split_its_calibrators_were_fitted_on(run, tmp_path):
    """The run's Platt calibrators were fitted on val: evaluating val with them is in-sample, refused unless
    allow_in_sample=true, which labels the report."""
    from mtrank.jobs.evaluate import evaluate

    cal = json.loads((run[0] / "calibration.json").read_text())
    assert cal["method"] == "platt" and cal["info"]["fitted_on"]["split"] == "val"
    cfg = compose_config("eval", [f"ckpt_path={run[0]}", "split=val"], tmp_path / "refused")
    with pytest.raises(
        ValueError,
        match=r"the platt calibrators were fitted on the val split of .*, the rows this "
        r"evaluation scores \(the run's calibration\.json\): an in-sample "
        r"evaluation; .*allow_in_sample=true",
    ):
        evaluate(cfg)
    cfg = compose_config("eval", [f"ckpt_path={run[0]}", "split=val", "allow_in_sample=true"], tmp_path / "allowed")
    evaluate(cfg)
    md = (tmp_path / "allowed" / "run" / "evaluation.md").read_text()
    assert "(IN-SAMPLE calibration)" in md.splitlines()[0] and "**IN-SAMPLE**" in md
    cfg = compose_config("eval", [f"ckpt_path={run[0]}", "split=test"], tmp_path / "test")
    evaluate(cfg)
    assert "IN-SAMPLE" not in (tmp_path / "test" / "run" / "evaluation.md").read_text()


def test_run_without_recorded_ranges_says_values_are_not_checked(run, tmp_path, caplog):
    """Runs processed before numeric ranges were recorded: scored, with a WARNING that the ranges are unchecked."""
    copy = _copy_run(run[0], tmp_path / "old", checkpoints=True)
    meta_path = copy / PREPROCESSING_DIR / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for f in meta["features"]["numeric"]:
        f.pop("min"), f.pop("max")
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="mtrank.scoring.raw_logs"):
        frame, info = score_logs(load_run(copy), CORPUS / "drifted_prices.csv")
    assert frame.height == 8 and info.out_of_range == {}
    assert any(
        "records no training range for numeric column(s) ['price', 'retrieval_score', 'candidate_popularity', "
        "'user_activity']" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
