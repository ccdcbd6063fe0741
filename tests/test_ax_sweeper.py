"""hydra/sweeper=ax (src/hydra_plugins/mtrank_ax_sweeper): parsing, real sweeps through Hydra, failures, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hydra_plugins.mtrank_ax_sweeper.ax_sweeper import (
    AxSweeper,
    format_value,
    parse_param,
)
from mtrank.tuning.space import Choice, Range
from mtrank.tuning.synthetic import simulated_predictions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def test_params_from_hydra_sweep_grammar_and_mappings():
    assert parse_param("lr", "tag(log, interval(1e-4, 1e-2))") == Range("lr", 1e-4, 1e-2, "float", True)
    assert parse_param("n", "int(interval(1, 8))") == Range("n", 1, 8, "int", False)
    assert parse_param("d", "choice(8, 16, 32)") == Choice("d", (8, 16, 32), True)
    assert parse_param("act", "choice(relu, gelu)") == Choice("act", ("relu", "gelu"), None)
    assert parse_param("k", "range(1, 4)") == Choice("k", (1, 2, 3), True)
    assert parse_param("x", {"type": "range", "bounds": [0.0, 2], "log": False}) == Range("x", 0.0, 2.0)
    # whole-number bounds make an integer parameter, as in the upstream Hydra Ax sweeper (int: false keeps a float)
    assert parse_param("x", {"type": "range", "bounds": [0, 2]}) == Range("x", 0, 2, "int")
    assert parse_param("x", {"type": "range", "bounds": [0, 2], "int": False}) == Range("x", 0.0, 2.0)
    assert parse_param("fixed", "3") is None and parse_param("fixed", 3) is None
    with pytest.raises(ValueError, match="type"):
        parse_param("x", {"type": "grid"})
    assert format_value(0.1) == "0.1" and format_value(True) == "true" and format_value("a b") == "'a b'"


def test_sweeper_config_composes_for_both_entry_points():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=ax_multitask"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_ == "hydra_plugins.mtrank_ax_sweeper.ax_sweeper.AxSweeper"
        assert cfg.hydra.sweeper.objective == "val/mean/auroc"
        cfg = compose(
            "tune_utility", overrides=["hparams_search=ax_utility", "predictions=x"], return_hydra_config=True
        )
        assert cfg.mode == "evaluate" and cfg.hydra.sweeper.objective == "f_long_click"
        assert cfg.hydra.sweeper.sum_constraint.total == 1.0
    # the plugin is found by Hydra's scan of the hydra_plugins namespace package
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert f"{AxSweeper.__module__}.{AxSweeper.__name__}" in found


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r


def test_utility_sweep_through_hydra(tmp_path):
    """python src/tune_utility.py -m hparams_search=ax_utility with the random generation strategy."""
    pred = tmp_path / "pred.parquet"
    simulated_predictions(10_000, seed=0).write_parquet(pred)
    sweep = tmp_path / "sweep"
    _run(
        [
            sys.executable,
            str(ROOT / "src" / "tune_utility.py"),
            "-m",
            "hparams_search=ax_utility",
            f"predictions={pred}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.generation.method=random_search",
        ]
    )
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert res["n_trials"] == {"budget": 3, "finished": 3, "completed": 3, "failed": 0}
    assert res["baseline_params"]["utility.weights.click"] == 0.4  # conf/utility/related_products.yaml
    for job in range(4):  # baseline + 3 trials, one folder each, numbered by trial index
        m = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert sum(m["weights"].values()) == pytest.approx(1.0, abs=1e-9)  # S1 in every job
    table = (sweep / "trials.csv").read_text().splitlines()
    assert len(table) == 5 and (sweep / "ax_experiment.json").exists() and (sweep / "trials.png").exists()
    feasible_best = res["best_evaluated_result"]
    assert feasible_best >= res["baseline_metrics"]["f_long_click"]


APP = """
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    if cfg.x > 0.7:
        raise ValueError("x too large")
    return {"obj": -(cfg.x - 0.3) ** 2 - (cfg.y - 0.6) ** 2, "c": cfg.x + cfg.y}

if __name__ == "__main__":
    main()
"""

APP_CONFIG = """
defaults:
  - override hydra/sweeper: ax
  - _self_
x: 0.5
y: 0.5
optimized_metric: obj
hydra:
  searchpath: [file://{conf}]
  sweeper:
    n_trials: 3
    batch_size: 3
    params: {{x: "interval(0.0, 1.0)", y: "interval(0.0, 1.0)"}}
    outcome_constraints: ["c >= 0.8 * baseline"]
    generation: {{method: random_search, seed: 0}}
"""


def _app(tmp_path: Path) -> list[str]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(APP_CONFIG.format(conf=ROOT / "conf"))
    return [sys.executable, str(tmp_path / "app.py"), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}"]


def _trials(sweep: Path) -> dict[int, dict]:
    state = json.loads((sweep / "ax_experiment.json").read_text())["experiment"]["trials"]
    return {int(t["index"]): t for t in state.values()}


def test_failed_jobs_are_marked_failed_in_batches(tmp_path):
    cmd = _app(tmp_path)
    sweep = tmp_path / "sweep"
    _run(cmd + ["hydra.sweeper.n_trials=6"], cwd=tmp_path)
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = _trials(sweep)
    assert sorted(trials) == list(range(7))  # baseline + 6, launched 3 at a time
    xs = {i: t["generator_run"]["arms"][0]["parameters"]["x"] for i, t in trials.items()}
    failed = [i for i, t in trials.items() if "FAILED" in json.dumps(t["status"])]
    assert failed and sorted(failed) == sorted(i for i, x in xs.items() if x > 0.7)  # failures marked failed
    assert res["n_trials"]["failed"] == len(failed) and res["n_trials"]["finished"] == 6
    assert res["baseline_params"] == {"x": 0.5, "y": 0.5}
    if res["best_evaluated_params"] is not None:
        p = res["best_evaluated_params"]
        assert p["x"] + p["y"] >= 0.8 * 1.0 - 1e-9  # the relative constraint c ≥ 0.8 · b (b = 1.0)
    assert all((sweep / str(i)).is_dir() for i in range(7))  # job folder = trial index


@pytest.mark.slow
def test_sweep_resumes_from_its_json(tmp_path):
    cmd = _app(tmp_path)
    sweep = tmp_path / "sweep"
    _run(cmd, cwd=tmp_path)
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["n_trials"]["finished"] == 3
    _run(cmd + ["hydra.sweeper.n_trials=7"], cwd=tmp_path)  # same sweep folder, larger budget: goes on
    trials = _trials(sweep)
    assert sorted(trials) == list(range(8))
    xs = [round(t["generator_run"]["arms"][0]["parameters"]["x"], 12) for t in trials.values()]
    assert len(set(xs)) == len(xs)  # nothing repeated on resume
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["n_trials"]["finished"] == 7


@pytest.mark.slow
def test_training_sweep_through_hydra(tmp_path):
    """python src/train.py -m hparams_search=ax_multitask debug=fast with a tiny random budget."""
    sweep = tmp_path / "sweep"
    _run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            "hparams_search=ax_multitask",
            "debug=fast",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.generation.method=random_search",
            "trainer.max_epochs=1",
        ]
    )
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert res["n_trials"]["finished"] == 1 and res["baseline_metrics"]["val/mean/auroc"] > 0.5
    assert "val/long_click/auroc" in res["baseline_metrics"]  # read from the job's metrics.json
