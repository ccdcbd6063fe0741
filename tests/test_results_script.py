"""scripts/real_data_results.py: the baselines run beside the nets, the titles describe the splits actually used,
and the "Produced by" line is the command that reproduces the tables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("real_data_results", ROOT / "scripts" / "real_data_results.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _meta(split, cuts=None, files=None, columns=None):
    return {
        "config": {
            "split": split,
            "columns": {"time": "time_ms", "time_unit": "ms", "time_zone": "Asia/Shanghai", **(columns or {})},
        },
        "splits": {"train": {"rows": 57855}, "val": {"rows": 15889}, "test": {"rows": 21040}},
        "time_cut_points_us": cuts,
        "source": {"files": files or {"all": ["/somewhere/local/interactions.parquet"]}},
    }


def test_split_description_reads_the_processed_metadata(script):
    day = 86_400_000_000
    text = script.split_description(
        _meta(
            {"by": "time", "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0},
            cuts={"val": 19111 * day, "test": 19112 * day},
        )
    )
    assert "train before 2022-04-29, val from 2022-04-29, test from 2022-04-30" in text
    assert "Asia/Shanghai" in text and "train 57,855, val 15,889, test 21,040" in text
    assert "`interactions.parquet`" in text and "/somewhere" not in text  # files by name, no local path
    later = script.split_description(
        _meta(
            {"by": "time", "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0},
            cuts={"val": 19111 * day, "test": 19112 * day + 3_600_000_000},
            files={"all": ["/a/log.parquet"], "test": ["/b/later.parquet"]},
        )
    )
    assert "test from 2022-04-30 01:00:00" in later and "test: `later.parquet`" in later
    rand = script.split_description(
        _meta(
            {"by": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 7},
            columns={"time": None, "time_unit": None},
        )
    )
    assert "at random by row hash (seed 7), 60%/20%/20%" in rand


def test_baselines_are_planned_with_src_baselines(script, tmp_path):
    jobs = script.plan(["census"], ["lightgbm", "sklearn_logistic", "logistic"], [0, 1], tmp_path, None, [])
    assert len(jobs) == 6
    by_variant = {(j.variant, j.seed): j.command for j in jobs}
    lgb = by_variant[("lightgbm", 1)]
    assert lgb[1].endswith("src/baselines.py") and "baseline=lightgbm" in lgb and "seed=1" in lgb
    assert f"hydra.run.dir={tmp_path / 'census' / 'lightgbm' / 'seed1'}" in lgb
    assert "baseline=logistic" in by_variant[("sklearn_logistic", 0)]
    net = by_variant[("logistic", 0)]
    assert net[1].endswith("src/train.py") and "model=logistic" in net


def test_produced_by_keeps_out_and_data_dir(script):
    ns = script.argparse.Namespace(
        datasets=["kuairand"],
        seeds=[0, 1, 2],
        variants=list(script.VARIANTS) + ["popularity"],
        out=str(ROOT / "logs" / "real"),
        data_dir="/elsewhere/data",
        jobs=2,
        overrides=["trainer.max_epochs=3"],
    )
    line = script.produced_by(ns)
    assert "--out logs/real" in line and "--data-dir /elsewhere/data" in line and "--jobs 2" in line
    assert line.endswith("trainer.max_epochs=3") and "--variants" not in line


def test_table_has_a_column_per_system(script):
    from mtrank.scoring.results_table import RunResult

    runs = [
        RunResult("census", script.VARIANTS[v][0], s, {"test/income/auroc": a + s / 1000, "test/income/n_pos": 601})
        for v, a in (("lightgbm", 0.95), ("sklearn_logistic", 0.94), ("shared_bottom", 0.93))
        for s in (0, 1, 2)
    ]
    text = script.render(runs, ["census"], "cmd", {"census": "random split"})
    assert "**Census-income (KDD): test AUROC**, mean ± sd over seeds. Splits: random split" in text
    header = next(line for line in text.splitlines() if line.startswith("| task"))
    assert "LightGBM" in header and "logistic regression (scikit-learn)" in header and "shared bottom" in header
    assert "**0.951 ± 0.001**" in text  # the best mean of the row in bold
