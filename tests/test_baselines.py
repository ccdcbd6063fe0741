"""The baselines beside the multi-task numbers: logistic regression per head, item popularity, and the
results table that puts them side by side."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.models.linear import LogisticNet
from mtrank.scoring.popularity import fit_popularity
from mtrank.scoring.results_table import RunResult, long_table, markdown_tables


def _spec(tasks=("a", "b")) -> FeatureSpec:
    return FeatureSpec(
        categorical=(CategoricalFeature("x", 4), CategoricalFeature("y", 3)), numeric=("z",), tasks=tuple(tasks)
    )


def test_logistic_net_is_a_linear_model_per_head():
    spec = _spec()
    net = LogisticNet(spec, ["a", "b"], head_bias_init={"a": -2.0})
    batch = {"categorical": torch.tensor([[1, 2], [3, 0]]), "numeric": torch.tensor([[0.5], [-1.0]])}
    out = net(batch)
    assert out.shape == (2, 2)
    torch.testing.assert_close(out, torch.tensor([[-2.0, 0.0], [-2.0, 0.0]]))  # zero weights: the biases
    with torch.no_grad():
        net.weights[0].weight[1] = torch.tensor([1.0, 10.0])
        net.numeric.weight[:, 0] = torch.tensor([2.0, 0.0])
    out = net(batch)
    torch.testing.assert_close(out[0], torch.tensor([-2.0 + 1.0 + 1.0, 10.0]))
    torch.testing.assert_close(out[1], torch.tensor([-2.0 - 2.0, 0.0]))
    # heads share nothing: the gradient of head a's logit does not reach head b's weights
    net.zero_grad()
    net(batch)[:, 0].sum().backward()
    assert net.weights[0].weight.grad[:, 1].abs().sum() == 0 and net.weights[0].weight.grad[:, 0].abs().sum() > 0


def test_logistic_net_feature_dropout_only_in_training():
    net = LogisticNet(_spec(), ["a"], dropout=0.5)
    with torch.no_grad():
        for w in net.weights:
            w.weight.fill_(1.0)
    batch = {"categorical": torch.ones(2000, 2, dtype=torch.long), "numeric": torch.zeros(2000, 1)}
    net.eval()
    assert torch.equal(net(batch), torch.full((2000, 1), 2.0))
    net.train()
    out = net(batch)
    assert set(out.unique().tolist()) <= {0.0, 2.0, 4.0} and abs(out.mean().item() - 2.0) < 0.15
    with pytest.raises(ValueError, match="unknown heads"):
        LogisticNet(_spec(), ["a"], head_bias_init={"zzz": 1.0})


def test_popularity_rates_are_smoothed_towards_the_global_rate():
    train = pl.DataFrame(
        {"item_id": [1, 1, 1, 1, 2, 2, 3], "label__a": [1, 1, 1, 0, 0, 0, 0]}, schema_overrides={"label__a": pl.UInt8}
    )
    model = fit_popularity(train, ["a"], prior_strength=2.0)
    r = 3 / 7
    assert model.global_rates["a"] == pytest.approx(r)
    scores = model.score(pl.DataFrame({"item_id": [1, 2, 3, 99]}))[:, 0]
    expected = [(3 + 2 * r) / (4 + 2), (0 + 2 * r) / (2 + 2), (0 + 2 * r) / (1 + 2), r]  # 99: never seen
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores[0] > scores[3] > scores[2] > scores[1]
    with pytest.raises(KeyError, match="popularity key 'shop'"):
        fit_popularity(train, ["a"], key="shop")


def test_results_table_mean_spread_and_best_in_bold():
    runs = [
        RunResult(
            "d",
            "single-task",
            s,
            {"test/a/auroc": 0.70 + 0.01 * s, "test/a/n_pos": 12.0, "test/mean/auroc": 0.0},
            tasks=["a"],
        )
        for s in range(3)
    ] + [
        RunResult(
            "d",
            "shared bottom",
            s,
            {"test/a/auroc": 0.75, "test/b/auroc": 0.6, "test/a/n_pos": 12.0, "val/a/auroc": 0.1},
        )
        for s in range(3)
    ]
    table = long_table(runs)
    assert set(table["metric"].unique()) == {"auroc", "n_pos"}
    md = markdown_tables(table, ["single-task", "shared bottom", "MMoE"], tasks={"d": ["a", "b"]}, metrics=["auroc"])[
        ("d", "auroc")
    ]
    lines = md.splitlines()
    assert lines[0] == "| task | test positives | single-task | shared bottom |"
    assert lines[2] == "| a | 12 | 0.710 ± 0.010 | **0.750 ± 0.000** |"
    assert lines[3] == "| b |  | – | **0.600 ± 0.000** |"
    assert not math.isnan(table.filter(pl.col("model") == "single-task")["value"].sum())
