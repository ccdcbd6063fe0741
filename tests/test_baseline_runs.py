"""src/baselines.py: LightGBM and logistic regression per task on the nets' processed splits (mtrank.baselines).

Small simulated data (a few thousand impressions, processed once per module) and hand-made arrays; each test runs in
seconds. What is checked: the run folder's metrics carry exactly the nets' metric names; C is chosen on val, from
the grid; LightGBM stops early on val and declares the categorical columns; bad configs name their key.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

from helpers import FAST_RUN, compose_config
from mtrank.baselines.config import validate_baseline_config
from mtrank.baselines.data import SplitArrays
from mtrank.errors import ConfigError
from mtrank.metrics.heads import HEAD_METRIC_NAMES

pytest.importorskip("lightgbm", reason="the 'baselines' extra (pip install -e '.[baselines]')")

SMALL = list(FAST_RUN)  # 12,000 simulated impressions


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("baseline_data")  # processed once, shared by the module's runs


def _cfg(tmp_path, data_dir, *extra):
    cfg = compose_config("baselines", [*SMALL, *extra], tmp_path)
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
    return cfg


def _expected_keys(tasks, has_p_true: bool) -> set[str]:
    names = list(HEAD_METRIC_NAMES) + (["oracle_auroc"] if has_p_true else [])
    return {f"{s}/{t}/{m}" for s in ("val", "test") for t in tasks for m in names} | {
        f"{s}/mean/{m}" for s in ("val", "test") for m in ("auroc", "pr_auc")
    }


@pytest.mark.parametrize("baseline", ["lightgbm", "logistic"])
def test_run_folder_holds_the_nets_metric_names(tmp_path, data_dir, baseline):
    from mtrank.baselines.job import run_baseline
    from mtrank.validation.metric_names import catalog_for_train_config

    cfg = (
        _cfg(tmp_path, data_dir, f"baseline={baseline}", "baseline.c_grid=[0.1,1.0]")
        if baseline == "logistic"
        else _cfg(tmp_path, data_dir, "baseline=lightgbm", "baseline.params.num_threads=1")
    )
    metrics = run_baseline(cfg)
    out = tmp_path / "run"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["baseline"] == baseline and saved["metrics"] == pytest.approx(metrics)
    tasks = list(cfg.tasks.names)
    keys = set(metrics) - {"time/fit_seconds"}
    assert keys == _expected_keys(tasks, has_p_true=True)
    # every one of them is a name the nets log on the same data and tasks
    net_cfg = compose_config("train", [*SMALL], tmp_path)
    assert keys <= set(catalog_for_train_config(net_cfg).run_names)
    # n_pos is the split's positives of the processed data the nets train on
    meta = json.loads((out / "run_info.json").read_text())["data"]
    processed = next(data_dir.glob("processed/simulated-*"))
    assert meta["processed_key"] == json.loads((processed / "metadata.json").read_text())["key"]
    positives = json.loads((processed / "metadata.json").read_text())["splits"]["test"]["positives"]
    for t in tasks:
        assert metrics[f"test/{t}/n_pos"] == positives[t]
    assert 0.6 < metrics["test/click/auroc"] <= 1.0 and 0.6 < metrics["test/mean/auroc"] <= 1.0
    # train is downsampled (β = 0.1), val and test are not: probabilities are corrected by Eq. 3 as the nets' are
    # (uncorrected, LightGBM's test ECE on click is about 0.09 here; corrected about 0.01)
    assert json.loads((processed / "metadata.json").read_text())["beta"] == 0.1
    assert metrics["test/click/ece"] < 0.05 and metrics["val/click/ece"] < 0.05, metrics["test/click/ece"]
    assert (out / "config.yaml").exists()
    models = saved["models"]
    assert set(models) == set(tasks)
    if baseline == "lightgbm":
        assert all((out / "models" / f"{t}.txt").exists() for t in tasks)
        assert all(m["best_iteration"] <= m["rounds_trained"] for m in models.values())
    else:
        assert all(m["C"] in (0.1, 1.0) and set(m["val_logloss_by_C"]) == {"0.1", "1.0"} for m in models.values())


def test_lightgbm_seed_is_the_run_seed(tmp_path, data_dir):
    from mtrank.baselines.job import run_baseline

    base = ["baseline=lightgbm", "baseline.params.num_threads=1", "baseline.save_models=false", "tasks.names=[click]"]
    a = run_baseline(_cfg(tmp_path / "a", data_dir, *base, "seed=1"))
    b = run_baseline(_cfg(tmp_path / "b", data_dir, *base, "seed=1"))
    c = run_baseline(_cfg(tmp_path / "c", data_dir, *base, "seed=2"))
    assert a["test/click/auroc"] == b["test/click/auroc"]  # same seed, same model
    assert a["test/click/auroc"] != c["test/click/auroc"]  # bagging and feature subsampling follow the seed


# ---------------------------------------------------------------------------------------- hand-made arrays


def _arrays(split, cat, num, y, cards):
    return SplitArrays(
        split,
        np.asarray(cat, np.int64),
        np.asarray(num, np.float32),
        np.asarray(y, np.float32)[:, None],
        tuple(f"c{j}" for j in range(len(cards))),
        tuple(cards),
        tuple(f"x{k}" for k in range(num.shape[1])),
        ("t",),
    )


def _signal(n, seed, noise_labels=False):
    """A label driven by a 20-value categorical (non-monotone in its index) and a numeric."""
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 20, size=(n, 1))
    num = rng.normal(size=(n, 1))
    logit = np.where(cat[:, 0] % 2 == 0, 1.5, -1.5) + 0.5 * num[:, 0]
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < (np.full(n, p.mean()) if noise_labels else p)).astype(np.float32)
    return cat, num, y


def _logloss(p, y, task):
    from mtrank.metrics.heads import compute_head_metrics

    return compute_head_metrics(p[:, None], y[:, None], [task], thresholds=[0.0, 1.0])[f"{task}/logloss"]


def test_logistic_c_is_chosen_on_val_from_the_grid():
    from mtrank.baselines.logistic import fit_logistic

    train = _arrays("train", *_signal(3000, 0), cards=[20])
    val_signal = _arrays("val", *_signal(2000, 1), cards=[20])
    val_noise = _arrays("val", *_signal(2000, 2, noise_labels=True), cards=[20])
    grid = [1e-4, 10.0]
    m1 = fit_logistic(train, val_signal, ["t"], c_grid=grid, val_logloss=_logloss)
    m2 = fit_logistic(train, val_noise, ["t"], c_grid=grid, val_logloss=_logloss)
    for m in (m1, m2):
        d = m.details["t"]
        assert set(d["val_logloss_by_C"]) == {"0.0001", "10.0"} and d["C"] in grid
        assert d["C"] == min(grid, key=lambda c: d["val_logloss_by_C"][str(c)])  # the lowest val log-loss
    # val that follows train's signal wants the weak penalty; val of pure noise the strong one
    assert m1.details["t"]["C"] == 10.0 and m2.details["t"]["C"] == 1e-4
    # the kept model is the one fitted with the chosen C
    assert m1.models["t"].C == 10.0
    with pytest.raises(ValueError, match="baseline.c_grid is empty"):
        fit_logistic(train, val_signal, ["t"], c_grid=[], val_logloss=_logloss)


def test_logistic_design_is_one_hot_with_standardised_numerics():
    from mtrank.baselines.logistic import OneHotDesign

    cat = np.array([[0, 2], [1, 0], [3, 1]])
    num = np.array([[1.0], [3.0], [5.0]])
    d = _arrays("train", cat, num, np.zeros(3), cards=[4, 3])
    design = OneHotDesign.fit(d)
    x = design.transform(d).toarray()
    assert x.shape == (3, 4 + 3 + 1)
    np.testing.assert_array_equal(x[:, :7], [[1, 0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 1, 0]])
    np.testing.assert_allclose(x[:, 7], (num[:, 0] - 3.0) / np.std(num[:, 0]))


def test_lightgbm_stops_early_on_val_and_declares_categoricals():
    from mtrank.baselines.gbdt import fit_lightgbm

    rng = np.random.default_rng(0)
    cat, num, y = _signal(4000, 0)
    cat = np.hstack([cat, rng.integers(0, 500, size=(4000, 1))])  # a second, noisy high-cardinality column
    train = _arrays("train", cat, num, y, cards=[20, 500])
    vcat, vnum, vy = _signal(2000, 1)
    val = _arrays("val", np.hstack([vcat, rng.integers(0, 500, size=(2000, 1))]), vnum, vy, cards=[20, 500])
    params = {"learning_rate": 0.3, "num_threads": 1, "verbosity": -1, "min_data_per_group": 10, "cat_smooth": 1.0}
    m = fit_lightgbm(train, val, ["t"], params=params, num_boost_round=2000, early_stopping_rounds=5)
    d = m.details["t"]
    assert d["stopped_early"] and d["rounds_trained"] == d["best_iteration"] + 5 < 2000
    assert d["categorical_features"] == ["cat__c0", "cat__c1"]
    # the parity of c0 is learnt through categorical splits (decision_type "==")
    dump = json.dumps(m.boosters["t"].dump_model())
    assert '"decision_type": "=="' in dump
    from mtrank.metrics.heads import compute_head_metrics

    auroc = compute_head_metrics(m.predict(val), val.labels, ["t"])["t/auroc"]
    assert auroc > 0.8
    m2 = fit_lightgbm(
        train, val, ["t"], params=params, num_boost_round=50, early_stopping_rounds=5, categorical_max_cardinality=100
    )
    assert m2.details["t"]["categorical_features"] == ["cat__c0"]  # c1's 500 values go in as numbers


def test_missing_lightgbm_names_the_extra(monkeypatch):
    from mtrank.baselines.gbdt import import_lightgbm

    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ImportError, match=r"extra 'baselines'.*\.\[baselines\]"):
        import_lightgbm()


# ---------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "key", "text"),
    [
        (["tasks.names=[click,clik]"], "tasks.names", "unknown task(s) [clik]"),
        (["baseline=logistic", "baseline.c_grid=[]"], "baseline.c_grid", "non-empty list"),
        (["baseline=logistic", "baseline.c_grid=[0.1,-1]"], "baseline.c_grid", "[-1] not positive"),
        (["baseline=logistic", "+baseline.c_grd=[1]"], "baseline.c_grd", "did you mean 'c_grid'"),
        (["baseline.early_stopping_rounds=0"], "baseline.early_stopping_rounds", "integer ≥ 1"),
        (["baseline.early_stopping_metric=aucc"], "baseline.early_stopping_metric", "did you mean 'auc'"),
        (["+baseline.params.seed=3"], "baseline.params.seed", "set by mtrank"),
        (["baseline.name=xgboost"], "baseline.name", "[lightgbm, logistic]"),
    ],
)
def test_bad_config_names_the_key(tmp_path, overrides, key, text):
    cfg = compose_config("baselines", [*SMALL, *overrides], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_baseline_config(cfg)
    assert key in err.value.keys and key in str(err.value) and text in str(err.value)


@pytest.mark.parametrize("experiment", ["kuairand", "census", "census_mmoe", "multitask", "mmoe", "binary"])
def test_every_experiment_composes_with_the_baselines(experiment):
    cfg = compose_config("baselines", [f"experiment={experiment}"])
    assert validate_baseline_config(cfg) == list(cfg.tasks.names)
    assert cfg.baseline.name == "lightgbm"
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert run_dir == "${paths.log_dir}/${task_name}/baselines/${baseline.name}/${now:%Y-%m-%d}_${now:%H-%M-%S}"


def test_entry_point_writes_its_run_folder(tmp_path, data_dir):
    """python src/baselines.py ...: the run folder is logs/<task_name>/baselines/<baseline>/<time>/."""
    from helpers import CONF

    root = __import__("pathlib").Path(CONF).parent
    cmd = [
        sys.executable,
        str(root / "src" / "baselines.py"),
        *SMALL,
        "baseline=lightgbm",
        "baseline.params.num_threads=1",
        "tasks.names=[click]",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "task_name=bl",
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert res.returncode == 0, res.stderr[-2000:]
    runs = list((tmp_path / "logs" / "bl" / "baselines" / "lightgbm").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())["metrics"]
    assert "test/click/auroc" in metrics and "val/click/pr_auc" in metrics
