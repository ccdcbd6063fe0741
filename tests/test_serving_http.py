"""The HTTP service through a real socket: ``src/serve.py`` is started from a tiny run folder (exported on start) on a
free port of 127.0.0.1 in a subprocess and called with httpx; the README's request is answered; every bad request
gets a 4xx naming the field; weights change per request, by PUT /weights and by a reload (endpoint and SIGHUP); the
server stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers import FAST_RUN, compose_config
from mtrank.jobs.train import train
from mtrank.serving import load_artifact
from mtrank.serving.export import export_run

ROOT = Path(__file__).resolve().parents[1]
FAST = [*FAST_RUN, "trainer.max_epochs=1", "logger=csv", "report.ks=[5]", "report.n_bins=8"]
TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_request() -> dict:
    """The first JSON block of README's "Serving" section: the documented POST /rank body."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Serving", 1)[1].split("\n## ", 1)[0]
    return json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving_http")
    cfg = compose_config("train", ["experiment=multitask", "calibration=platt", *FAST], tmp)
    train(cfg)
    run = tmp / "run"
    port = _free_port()
    log_path = tmp / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "src/serve.py",
                f"artifact={run}",
                f"port={port}",
                "host=127.0.0.1",
                "max_body_bytes=200000",
                "max_candidates=1000",
                f"hydra.run.dir={tmp / 'serve'}",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=TIMEOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    yield {"client": client, "proc": proc, "run": run, "tmp": tmp, "log": log_path}
    client.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _fields(resp: httpx.Response) -> list[str]:
    return [".".join(str(x) for x in d["loc"]) for d in resp.json()["detail"]]


def test_readme_request_is_answered_like_the_loader(server):
    client, run = server["client"], server["run"]
    body = readme_request()
    resp = client.post("/rank", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    art = load_artifact(run / "artifact")
    want = art.rank(body["candidates"], request=body.get("request"), weights=body.get("weights"))
    assert out["order"] == want.order.tolist()
    assert out["item_ids"] == [body["candidates"][i]["candidate_id"] for i in want.order]
    assert sorted(out["probabilities"]) == sorted(art.tasks)
    for j, t in enumerate(art.tasks):
        np.testing.assert_allclose(out["probabilities"][t], want.probabilities[:, j], rtol=1e-6)
    np.testing.assert_allclose(out["utility"], want.utility, rtol=1e-9)
    assert out["weights"] == {**art.default_weights, **body.get("weights", {})}
    assert out["artifact_id"] == art.artifact_id and out["request_id"] == body["request_id"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["artifact_id"] == art.artifact_id
    meta = client.get("/metadata").json()
    assert meta["columns"]["price"] == "numeric Float64" and meta["item_id"] == "candidate_id"


def test_batch_equals_single_requests(server):
    client = server["client"]
    body = readme_request()
    other = {**body, "request_id": "b", "weights": {"save": 1.0, "click": 0.0, "long_click": 0.0, "closeup": 0.0}}
    resp = client.post("/rank/batch", json={"requests": [body, other]})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results[0]["order"] == client.post("/rank", json=body).json()["order"]
    assert results[1]["order"] == client.post("/rank", json=other).json()["order"]
    np.testing.assert_allclose(results[1]["utility"], results[1]["probabilities"]["save"], rtol=1e-9)


def test_bad_requests_get_4xx_naming_the_field(server):
    client = server["client"]
    good = readme_request()
    cand = good["candidates"][0]
    without = {k: v for k, v in cand.items() if k != "price"}
    cases = [
        ({**good, "candidates": [cand, without]}, 422, "body.candidates.1.price"),  # missing column
        ({**good, "candidates": [{**cand, "price": "cheap"}]}, 422, "body.candidates.0.price"),  # wrong type
        ({**good, "candidates": [{**cand, "position": 1.5}]}, 422, "body.candidates.0.position"),  # not a category
        ({**good, "candidates": [{**cand, "price": [1]}]}, 422, "body.candidates.0.price"),  # not a scalar
        ({**good, "candidates": [{**cand, "price": 10**400}]}, 422, "body.candidates.0.price"),  # not finite
        ({**good, "candidates": [{**cand, "position": 2**64}]}, 422, "body.candidates.0.position"),  # not int64
        ({**good, "candidates": []}, 422, "body.candidates"),  # empty
        ({**good, "candidates": [{**cand, "colour": "red"}]}, 422, "body.candidates.0.colour"),  # unknown column
        ({**good, "colour": "red"}, 422, "body.colour"),  # unknown field
        ({**good, "request": {**good["request"], "mood": 1}}, 422, "body.request.mood"),  # unknown column
        ({**good, "weights": {"hover": 1.0}}, 422, "body.weights.hover"),  # unknown task
        ({**good, "weights": {"click": "much"}}, 422, "body.weights.click"),  # not a number
        ({**good, "candidates": [cand] * 1001}, 422, "body.candidates"),  # too many
        ({k: v for k, v in good.items() if k != "candidates"}, 422, "body.candidates"),  # no candidates
        ({"requests": []}, 422, "body.candidates"),  # wrong endpoint body
    ]
    for body, status, field in cases:
        resp = client.post("/rank", json=body)
        assert resp.status_code == status, (field, resp.status_code, resp.text)
        assert field in _fields(resp), (field, resp.text)
        named = [d for d in resp.json()["detail"] if ".".join(str(x) for x in d["loc"]) == field]
        assert field.split(".")[-1] in named[0]["msg"], (field, resp.text)
    # a weight that is not finite (JSON has no literal for it, Python's json writes one)
    resp = client.post(
        "/rank",
        content=json.dumps({**good, "weights": {"click": float("inf")}}),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 422 and "body.weights.click" in _fields(resp), resp.text
    # not JSON at all
    resp = client.post("/rank", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    # an oversized body is refused before it is parsed, with or without a Content-Length
    huge = {**good, "candidates": [{**cand, "candidate_id": i} for i in range(2500)]}
    resp = client.post("/rank", json=huge)
    assert resp.status_code == 413 and _fields(resp) == ["body"] and "max_body_bytes=200000" in resp.text
    payload = json.dumps(huge).encode()
    resp = client.post(
        "/rank",
        content=iter([payload[i : i + 65536] for i in range(0, len(payload), 65536)]),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413, resp.text
    # batch errors name the request
    resp = client.post("/rank/batch", json={"requests": [good, {**good, "candidates": [without]}]})
    assert resp.status_code == 422 and "body.requests.1.candidates.0.price" in _fields(resp), resp.text
    resp = client.post("/rank/batch", json={"requests": [{**good, "candidates": [without]}]})
    assert resp.status_code == 422 and "body.requests.0.candidates.0.price" in _fields(resp), resp.text
    resp = client.post("/rank/batch", json={"requests": [good, {**good, "candidates": [cand] * 1001}]})
    assert resp.status_code == 422 and "body.requests.1.candidates" in _fields(resp), resp.text
    resp = client.post("/rank/batch", json={"requests": [good] * 65})
    assert resp.status_code == 422 and "body.requests" in _fields(resp) and "max_batch_requests" in resp.text
    resp = client.post("/rank/batch", json={"requests": []})
    assert resp.status_code == 422 and "body.requests" in _fields(resp), resp.text
    assert client.get("/health").status_code == 200  # still serving
    assert "Traceback" not in server["log"].read_text()


def test_weights_change_without_retraining(server):
    client, run = server["client"], server["run"]
    body = readme_request()
    body.pop("weights", None)
    art_dir = run / "artifact"
    only = {t: 0.0 for t in load_artifact(art_dir).tasks}
    # per request
    r = client.post("/rank", json={**body, "weights": {**only, "closeup": 1.0}}).json()
    assert r["order"] == list(np.argsort(-np.array(r["probabilities"]["closeup"]), kind="stable"))
    # the defaults, in memory
    resp = client.put("/weights", json={"weights": {**only, "save": 1.0}})
    assert resp.status_code == 200 and resp.json()["weights"]["save"] == 1.0
    r = client.post("/rank", json=body).json()
    assert r["weights"]["save"] == 1.0 and r["order"] == list(
        np.argsort(-np.array(r["probabilities"]["save"]), kind="stable")
    )
    assert client.put("/weights", json={"weights": {"hover": 1}}).status_code == 422
    # a re-export with other weights, then POST /reload
    old_id = client.get("/health").json()["artifact_id"]
    export_run(run, art_dir, weights={**only, "long_click": 1.0})
    resp = client.post("/reload")
    assert resp.status_code == 200, resp.text
    health = client.get("/health").json()
    assert health["weights"]["long_click"] == 1.0 and health["artifact_id"] != old_id and health["reloads"] == 1
    # ... and SIGHUP
    export_run(run, art_dir, weights={**only, "click": 1.0})
    server["proc"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while client.get("/health").json()["weights"]["click"] != 1.0:
        assert time.monotonic() < deadline, "SIGHUP did not reload the artifact"
        time.sleep(0.2)
    # a broken artifact on disk: 409, and the one in service stays
    (art_dir / "utility.json").write_text("{}")
    resp = client.post("/reload")
    assert resp.status_code == 409 and "utility.json" in resp.text
    assert client.post("/rank", json=body).status_code == 200
    export_run(run, art_dir, weights={**only, "click": 1.0})


def test_benchmark_script_prints_its_figures_against_the_targets(server, tmp_path):
    logs = sorted((server["tmp"] / "data" / "raw").glob("simulated-*/*.parquet"))
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench_serving.py",
            "--artifact",
            str(server["run"] / "artifact"),
            "--logs",
            *map(str, logs),
            "--candidates",
            "50",
            "--batch",
            "2",
            "--iters",
            "8",
            "--warmup",
            "2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| in-process") or line.startswith("| HTTP")]
    assert len(rows) == 4 and "≤ 20 ms" in rows[0] and "≤ 50 ms" in rows[2], proc.stdout
    assert "load average before" in proc.stdout
    figures = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["requests_per_call"]) for r in figures] == [
        ("in-process", 1),
        ("in-process", 2),
        ("HTTP", 1),
        ("HTTP", 2),
    ]
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["candidates_per_s"] > 0 for r in figures)


def test_server_stops_cleanly(server):
    proc, client = server["proc"], server["client"]
    assert client.get("/health").status_code == 200
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down (open requests finished, lifespan closed), then re-raises the signal it caught
    assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    log = server["log"].read_text()
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "Traceback" not in log
