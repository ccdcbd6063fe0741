"""Export → load → score equals the run's evaluation: tiny simulated runs trained in a tmp folder are exported, the
raw log rows of their test split are ranked by the artifact, and the probabilities and per-request rankings are
compared with ``src/eval.py``'s predictions; the loader imports no training code; bad input names the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import FAST_RUN, compose_config
from mtrank.jobs.evaluate import evaluate
from mtrank.jobs.train import train
from mtrank.serving import ArtifactError, RequestError, load_artifact
from mtrank.serving.export import export_run
from mtrank.utility.objectives import rank_within_requests

ROOT = Path(__file__).resolve().parents[1]
FAST = [*FAST_RUN, "trainer.max_epochs=1", "logger=csv", "report.ks=[5]", "report.n_bins=8"]
WEIGHTS = {"save": 0.2, "click": 0.4, "long_click": 0.3, "closeup": 0.1}

RUNS = {
    "multitask_platt": ["experiment=multitask", "calibration=platt"],
    "binary_isotonic": ["experiment=binary", "calibration=isotonic"],
    # with tied heads (model.net.implied): the exported graph holds the union of the two heads' probabilities too
    "mmoe_none": [
        "experiment=mmoe",
        "calibration=none",
        "model.net.implied={long_click: click}",
        "model.net.implied_form=union",
    ],
    # PLE (experiment=kuairand's net) with the conditional tie
    "ple_none": ["experiment=mmoe", "model=ple", "calibration=none", "model.net.implied={long_click: click}"],
}


def _train(tmp: Path, overrides: list[str]) -> Path:
    cfg = compose_config("train", [*overrides, *FAST], tmp)
    train(cfg)
    return tmp / "run"


_CACHE: dict[str, tuple] = {}


def _exported(name: str, tmp_path_factory) -> tuple:
    """(tmp, run folder, artifact folder, eval predictions) of the tiny run ``name``, trained once per module."""
    if name not in _CACHE:
        tmp = tmp_path_factory.mktemp(name)
        run = _train(tmp, RUNS[name])
        art_dir = export_run(run, weights=WEIGHTS, utility_name="test")
        ev = tmp / "eval"
        evaluate(compose_config("eval", [f"ckpt_path={run}", "report.ks=[5]", "report.n_bins=8"], ev))
        _CACHE[name] = (tmp, run, art_dir, pl.read_parquet(ev / "run" / "predictions.parquet"))
    return _CACHE[name]


@pytest.fixture(scope="module", params=sorted(RUNS))
def every_run(request, tmp_path_factory):
    return _exported(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _exported("multitask_platt", tmp_path_factory)


def _raw_test_rows(tmp: Path, predictions: pl.DataFrame) -> pl.DataFrame:
    """The raw log rows of the test split, in the order of the eval predictions."""
    raw = pl.concat([pl.read_parquet(p) for p in sorted(Path(tmp, "data", "raw").glob("simulated-*/*.parquet"))])
    keys = predictions.select("request_id", pl.col("item_id").alias("candidate_id")).with_row_index("__order")
    rows = keys.join(raw, on=["request_id", "candidate_id"], how="left").sort("__order")
    assert rows.height == predictions.height and rows["position"].null_count() == 0
    return rows.drop("__order")


def test_export_writes_a_self_contained_artifact(every_run):
    _, run, art_dir, _ = every_run
    assert art_dir == run / "artifact"
    names = {p.relative_to(art_dir).as_posix() for p in art_dir.rglob("*") if p.is_file()}
    assert {"manifest.json", "network.pt2", "features.json", "calibration.json", "utility.json"} <= names
    assert any(n.startswith("vocab/") for n in names)
    manifest = json.loads((art_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["source"]["checkpoint_sha256"] and manifest["source"]["data_fingerprint"]["inputs"]
    assert {"torch", "polars", "numpy", "mtrank", "python"} <= set(manifest["versions"])
    assert not list(art_dir.parent.glob(".artifact.*"))  # no temporary folder left behind


def test_exported_path_equals_eval_on_the_test_split(every_run):
    tmp, _, art_dir, pred = every_run
    art = load_artifact(art_dir)
    tasks = art.tasks
    rows = _raw_test_rows(tmp, pred)
    # one request at a time, as a server sees them, from dict rows (what JSON gives) ...
    requests = rows.partition_by("request_id", maintain_order=True, include_key=True)
    got_p, got_rank = [], []
    for part in requests:
        ranking = art.rank(list(part.drop([c for c in part.columns if c not in art._known]).iter_rows(named=True)))
        got_p.append(ranking.probabilities)
        rank = np.empty(part.height, dtype=np.int64)
        rank[ranking.order] = np.arange(part.height)
        got_rank.append(rank)
        assert ranking.item_ids == part["candidate_id"].to_list()
    got_p = np.concatenate(got_p)
    order = np.concatenate([p["candidate_id"].to_numpy() for p in requests])
    ref = pred.join(
        pl.DataFrame(
            {"item_id": order, "request_id": np.concatenate([p["request_id"].to_numpy() for p in requests])}
        ).with_row_index("__o"),
        on=["request_id", "item_id"],
    ).sort("__o")
    want_p = ref.select([f"p_{t}" for t in tasks]).to_numpy()
    np.testing.assert_allclose(got_p, want_p, rtol=0, atol=1e-5)
    want_rank = rank_within_requests(
        ref["request_id"].to_numpy(), want_p.astype(np.float64) @ np.array([WEIGHTS[t] for t in tasks])
    )
    assert np.array_equal(np.concatenate(got_rank), want_rank)
    # ... and the whole split at once from the log frame (extra columns dropped on request)
    p_frame, raw_frame = art.score(rows, ignore_unknown=True)
    np.testing.assert_allclose(p_frame, pred.select([f"p_{t}" for t in tasks]).to_numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(raw_frame, pred.select([f"p_raw_{t}" for t in tasks]).to_numpy(), rtol=0, atol=1e-5)


def test_per_request_weights_reorder_without_reexport(exported):
    tmp, _, art_dir, pred = exported
    art = load_artifact(art_dir)
    part = _raw_test_rows(tmp, pred).head(20)
    base = art.rank(part, ignore_unknown=True)
    assert base.weights == WEIGHTS
    w = {t: (1.0 if t == "save" else 0.0) for t in art.tasks}
    only_save = art.rank(part, weights=w, ignore_unknown=True)
    np.testing.assert_allclose(only_save.utility, base.probabilities[:, art.tasks.index("save")], rtol=1e-6)
    assert list(only_save.order) == list(np.argsort(-base.probabilities[:, art.tasks.index("save")], kind="stable"))
    partial = art.rank(part, weights={"click": 2.0}, ignore_unknown=True)
    assert partial.weights == {**WEIGHTS, "click": 2.0}
    many = art.rank_many([{"candidates": part}, {"candidates": part, "weights": w}], ignore_unknown=True)
    np.testing.assert_array_equal(many[0].order, base.order)
    np.testing.assert_array_equal(many[1].order, only_save.order)


def test_loader_imports_no_training_code(exported):
    _, _, art_dir, _ = exported
    code = (
        "import sys, json\n"
        "from mtrank.serving import load_artifact\n"
        f"art = load_artifact({str(art_dir)!r})\n"
        "feats = art.describe()['columns']\n"
        "row = {c: (1 if 'categorical' in k else 1.5) for c, k in feats.items()}\n"
        "r = art.rank([row, row])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'hydra', "
        "'omegaconf', 'lightning_fabric', 'torchmetrics', 'wandb', 'ax') or m in ('mtrank.training', "
        "'mtrank.training.module', 'mtrank.scoring.run', 'mtrank.jobs.evaluate', 'mtrank.serving.export'))\n"
        "print(json.dumps({'bad': bad, 'order': r.order.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bad"] == [] and sorted(result["order"]) == [0, 1]


def _row(art) -> dict:
    return {c: (3 if "categorical" in kind else 1.25) for c, kind in art.describe()["columns"].items()}


def test_bad_candidates_name_the_field(exported):
    _, _, art_dir, _ = exported
    art = load_artifact(art_dir)
    good = _row(art)
    cases = [
        ("candidates", []),
        ("candidates[1].price", [good, {k: v for k, v in good.items() if k != "price"}]),
        ("candidates[0].retrieval_score", [{**good, "retrieval_score": "high"}]),
        ("candidates[0].position", [{**good, "position": 2.5}]),
        ("candidates[0].user_segment", [{**good, "user_segment": "a"}]),
        ("candidates[0].colour", [{**good, "colour": 1}]),
        ("candidates[0].price", [{**good, "price": float("inf")}]),
        ("candidates[2]", [good, good, 7]),
        ("candidates[1].user_segment", [good, {**good, "user_segment": 2**70}]),
        ("candidates[0].retrieval_score", [{**good, "retrieval_score": 10**400}]),
    ]
    for field, candidates in cases:
        with pytest.raises(RequestError) as err:
            art.rank(candidates)
        assert err.value.field == field, (field, str(err.value))
    with pytest.raises(RequestError, match=r"weights\.hover: unknown task"):
        art.rank([good], weights={"hover": 1.0})
    with pytest.raises(RequestError, match=r"weights\.click: must be a finite number"):
        art.rank([good], weights={"click": float("nan")})
    with pytest.raises(RequestError, match=r"request\.user_segment"):
        art.rank([{k: v for k, v in good.items() if k != "user_segment"}], request={"user_segment": [1]})
    # a whole-number float for an integer category is the integer; unseen values go to the OOV bucket
    a = art.rank([{**good, "position": 3.0}]).probabilities
    b = art.rank([{**good, "position": 3}]).probabilities
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(art.rank([{**good, "query_category": 10**9}]).probabilities).all()
    # request-level columns are given once for every candidate
    shared = {"user_segment": 3, "user_activity": 1.25}
    cands = [{k: v for k, v in good.items() if k not in shared}] * 2
    np.testing.assert_array_equal(art.rank(cands, request=shared).probabilities, art.rank([good, good]).probabilities)


def test_broken_artifacts_are_refused(exported, tmp_path):
    import shutil

    _, _, art_dir, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(art_dir, copy)
    (copy / "utility.json").write_text(json.dumps({"weights": {"save": 1.0}}))
    with pytest.raises(ArtifactError, match="utility.json does not match the sha256"):
        load_artifact(copy)
    manifest = json.loads((art_dir / "manifest.json").read_text())
    shutil.copy(art_dir / "utility.json", copy / "utility.json")
    del manifest["head_betas"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="malformed.*head_betas"):
        load_artifact(copy)
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_artifact(copy)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_export_refuses_weights_for_other_tasks(exported, tmp_path):
    _, run, _, _ = exported
    with pytest.raises(ValueError, match=r"unknown: \['hide'\].*missing: \['closeup'\]"):
        export_run(run, tmp_path / "a", weights={"save": 1, "click": 1, "long_click": 1, "hide": -1})
    assert not (tmp_path / "a").exists()


def test_export_entry_point(exported, tmp_path):
    _, run, _, _ = exported
    out = tmp_path / "cli_artifact"
    proc = subprocess.run(
        [
            sys.executable,
            "src/export.py",
            f"ckpt_path={run}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "weights={save: 0.5, click: 0.5, long_click: 0.0, closeup: 0.0}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"artifact: {out}" in proc.stdout
    art = load_artifact(out)
    assert art.default_weights == {"save": 0.5, "click": 0.5, "long_click": 0.0, "closeup": 0.0}
    assert json.loads((out / "utility.json").read_text())["source"] == "weights"
    # without weights=: the utility config's (conf/utility/related_products.yaml)
    proc = subprocess.run(
        [sys.executable, "src/export.py", f"ckpt_path={run}", f"output={out}", f"hydra.run.dir={tmp_path / 'hydra2'}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_artifact(out).default_weights == WEIGHTS
    assert json.loads((out / "utility.json").read_text())["source"] == "utility=related_products"


def test_a_failed_export_leaves_the_previous_artifact(exported, tmp_path, monkeypatch):
    import mtrank.serving.export as ex

    _, run, _, _ = exported
    out = tmp_path / "art"
    export_run(run, out, weights=WEIGHTS)
    before = json.loads((out / "manifest.json").read_text())["artifact_id"]

    def broken(run, path):
        path.write_bytes(b"half a network")
        raise ex.ExportCheckError("the exported network's logits differ")

    monkeypatch.setattr(ex, "export_network", broken)
    with pytest.raises(ex.ExportCheckError):
        export_run(run, out, weights={**WEIGHTS, "click": 1.0})
    assert load_artifact(out).artifact_id == before and load_artifact(out).default_weights == WEIGHTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary folder left
    with pytest.raises(FileExistsError, match="overwrite"):
        export_run(run, out, weights=WEIGHTS, overwrite=False)


def test_serve_warns_when_the_run_has_a_newer_checkpoint(exported, tmp_path, caplog):
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("serve_entry", ROOT / "src" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    _, run, art_dir, _ = exported
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with caplog.at_level("WARNING", logger="mtrank.serve"):
        serve._warn_if_stale(copy, copy / "artifact")
    assert not caplog.records  # exported from the run's best checkpoint
    best = json.loads((copy / "metrics.json").read_text())["best_checkpoint"]
    (copy / "checkpoints" / Path(best).name).write_bytes(b"trained on since")
    with caplog.at_level("WARNING", logger="mtrank.serve"):
        serve._warn_if_stale(copy, copy / "artifact")
    assert "re-export" in caplog.text
