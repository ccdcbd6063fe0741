"""The corpus of bad configs (tests/corpus/config/*.yaml): one test per case, each asserting the ConfigError
message and the key it names; every shipped experiment passes; a bad run stops before any data is made."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from helpers import CONF, compose_config
from mtrank.validation import (
    ConfigError,
    validate_eval_config,
    validate_predict_config,
    validate_train_config,
    validate_tune_config,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "corpus" / "config"
VALIDATORS = {
    "train": validate_train_config,
    "tune_utility": validate_tune_config,
    "predict": validate_predict_config,
    "eval": validate_eval_config,
}
EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))
TASKS = ["save", "click", "long_click", "closeup"]
EXT_TASKS = TASKS + ["hide", "checkout"]


def _cases() -> list:
    out = []
    for f in sorted(CORPUS.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        for case in doc["cases"]:
            out.append(pytest.param(doc["config"], case, id=f"{f.stem}/{case['id']}"))
    return out


def _predictions(path: Path, tasks: list[str]) -> Path:
    """A tiny predictions file in the mtrank.scoring.score contract (values do not matter to the checks)."""
    n = 40
    cols = {"request_id": [i // 4 for i in range(n)], "item_id": list(range(n))}
    for j, t in enumerate(tasks):
        cols[f"label_{t}"] = [int((i + j) % 5 == 0) for i in range(n)]
        cols[f"p_raw_{t}"] = [((i * 7 + j) % 11) / 11 for i in range(n)]
        cols[f"p_{t}"] = [((i * 7 + j) % 11) / 11 for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(cols).write_parquet(path)
    return path


def _true_only(path: Path, tasks: list[str]) -> Path:
    """Labels and the simulator's p_true_<task> only: no prediction column (p_true_ is not p_ + a task)."""
    cols: dict = {"request_id": [0, 0, 1, 1], "item_id": [0, 1, 2, 3]}
    for t in tasks:
        cols[f"label_{t}"] = [0, 1, 0, 1]
        cols[f"p_true_{t}"] = [0.1, 0.2, 0.3, 0.4]
    pl.DataFrame(cols).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("corpus_config")
    (tmp / "run").mkdir()
    return {
        "predictions": str(_predictions(tmp / "pred.parquet", TASKS)),
        "predictions_ext": str(_predictions(tmp / "pred_ext.parquet", EXT_TASKS)),
        "run": str(tmp / "run"),
        "predictions_true_only": str(_true_only(tmp / "pred_true_only.parquet", TASKS)),
    }


def _compose(config: str, overrides: list[str], patch: dict | None = None):
    """As the entry point composes it (with its hydra node, so the sweeper is seen), then ``patch`` merged as is."""
    cfg = compose_config(config, overrides)
    if patch:
        OmegaConf.set_readonly(cfg, False)
        with open_dict(cfg):
            cfg.merge_with(patch)
    return cfg


def _fill(text: str, places: dict[str, str]) -> str:
    for k, v in places.items():
        text = text.replace("{" + k + "}", v)
    return text


@pytest.mark.parametrize("config,case", _cases())
def test_bad_config_is_refused_with_its_message(config, case, places):
    overrides = [_fill(o, places) for o in case.get("overrides") or []]
    cfg = _compose(config, overrides, case.get("patch"))
    with pytest.raises(ConfigError) as err:
        VALIDATORS[config](cfg)
    assert re.search(case["error"], str(err.value)), f"\n{err.value}\n  does not match\n{case['error']}"
    assert case["key"] in err.value.keys, (case["key"], err.value.keys)


def test_corpus_covers_every_validator():
    assert {c.values[0] for c in _cases()} == set(VALIDATORS)


# ------------------------------------------------------------------------------------------ shipped configs pass


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes(experiment):
    catalog = validate_train_config(_compose("train", [f"experiment={experiment}"]))
    assert catalog.fit_names and catalog.fit_names < catalog.run_names


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if not e.startswith("census")])
def test_the_training_sweep_passes(experiment):
    """hparams_search=ax_multitask constrains val/long_click/auroc: every experiment with that task."""
    validate_train_config(_compose("train", [f"experiment={experiment}", "hparams_search=ax_multitask"]))


def test_debug_and_tuned_configs_pass(places):
    validate_train_config(_compose("train", ["experiment=multitask", "debug=fast"]))
    validate_train_config(
        _compose(
            "train",
            [
                "experiment=multitask",
                "loss.task_weighting=fixed",
                "loss.task_weights={save: 1, click: 1, long_click: 2, closeup: 1}",
                "loss.pos_weight={save: 3.0}",
                "calibration=isotonic",
            ],
        )
    )
    validate_train_config(
        _compose(
            "train",
            [
                "experiment=mmoe",
                "optimized_metric=val/gates/click/entropy",
                "callbacks.model_checkpoint.mode=min",
                "callbacks.early_stopping.mode=min",
            ],
        )
    )
    validate_train_config(
        _compose("train", ["experiment=census", "tasks.names=[income]", "model.net.head_bias_init=-2.74"])
    )
    validate_train_config(_compose("train", ["train=false", "optimized_metric=test/mean/auroc"]))  # test only
    validate_tune_config(_compose("tune_utility", [f"predictions={places['predictions']}"]))
    validate_tune_config(
        _compose("tune_utility", [f"predictions={places['predictions_ext']}", "utility=related_products_ext"])
    )
    validate_tune_config(
        _compose("tune_utility", [f"predictions={places['predictions']}", "hparams_search=ax_utility"])
    )
    validate_predict_config(_compose("predict", [f"ckpt_path={places['run']}", "max_unseen_fraction=0.2"]))
    validate_eval_config(_compose("eval", [f"ckpt_path={places['run']}", "calibration=isotonic"]))
    validate_eval_config(
        _compose("eval", [f"ckpt_path={places['run']}", "calibration=isotonic", "split=val", "allow_in_sample=true"])
    )  # opted in: the report is labelled IN-SAMPLE
    validate_eval_config(_compose("eval", [f"ckpt_path={places['run']}", "calibration=none", "split=val"]))


def test_every_problem_is_reported_at_once():
    cfg = _compose(
        "train",
        [
            "tasks.names=[save,clik]",
            "data.pipeline.downsample.beta=2",
            "callbacks.early_stopping.monitor=val/mean/aurc",
        ],
    )
    with pytest.raises(ConfigError) as err:
        validate_train_config(cfg)
    assert {"tasks.names", "data.pipeline.downsample.beta", "callbacks.early_stopping.monitor"} <= set(err.value.keys)
    assert str(err.value).startswith("invalid train config, ")


# ------------------------------------------------------------------------------------------ before any data


def test_a_bad_run_stops_before_any_data_is_made(tmp_path, monkeypatch):
    from mtrank.data import datamodule
    from mtrank.jobs.train import train

    def forbidden(*a, **k):
        raise AssertionError("data was generated or processed before the config was checked")

    monkeypatch.setattr(datamodule, "simulated_logs", forbidden)
    monkeypatch.setattr(datamodule, "process", forbidden)
    cfg = compose_config("train", ["debug=fast", "data.pipeline.downsample.beta=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.pipeline\.downsample\.beta = 0"):
        train(cfg)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_the_tuning_entry_point_checks_its_config(tmp_path):
    """src/tune_utility.py fails at once with the message (train(cfg) is checked by the test above)."""
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "tune_utility.py"),
            "utility.objective=long_clik",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"predictions={_predictions(tmp_path / 'p.parquet', TASKS)}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert "ConfigError: invalid tune_utility config: utility.objective = 'long_clik'" in r.stderr, r.stderr[-2000:]
