"""Benchmark (f): ranking latency of an exported artifact, in-process and over HTTP, on CPU.

Cases: one request of 500 candidates, and batches of requests (``--batch`` requests × 500 candidates per call:
``rank_many`` in-process, ``POST /rank/batch`` over HTTP). Over HTTP the script starts ``src/serve.py`` on a free
port of 127.0.0.1 and times each call with a keep-alive httpx client (request bodies serialised beforehand, the
response parsed). Prints p50 / p99 latency per call and candidates/s against the targets (1 × 500: p99 ≤ 20 ms
in-process, ≤ 50 ms over HTTP), with the load average before and after.

Without ``--artifact`` a small run is trained on simulated data (``src/train.py debug=fast``: the default
shared-bottom network, one epoch) in a temporary folder and exported; candidates are rows of its logs, the
user's and the query's columns sent once per request.

    python scripts/bench_serving.py                       # train + export a small run, then measure
    python scripts/bench_serving.py --artifact <dir> --candidates 500 --iters 500 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MS = {("in-process", 1): 20.0, ("HTTP", 1): 50.0}
REQUEST_COLUMNS = ("user_segment", "user_activity", "query_category")


def _run(args: list[str], **kw) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, env={**os.environ, "WANDB_MODE": "offline"}, **kw)


def make_artifact(tmp: Path) -> tuple[Path, list[Path]]:
    """Train a small run (default network, simulated logs) and export it; return the artifact and the raw logs."""
    _run(
        [
            "src/train.py",
            "experiment=multitask",
            "debug=fast",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "callbacks.throughput=null",
            f"paths.log_dir={tmp / 'logs'}",
            f"paths.data_dir={tmp / 'data'}",
            f"hydra.run.dir={tmp / 'run'}",
        ],
        stdout=subprocess.DEVNULL,
    )
    _run(
        ["src/export.py", f"ckpt_path={tmp / 'run'}", f"output={tmp / 'artifact'}", f"hydra.run.dir={tmp / 'export'}"],
        stdout=subprocess.DEVNULL,
    )
    return tmp / "artifact", sorted((tmp / "data" / "raw").glob("simulated-*/*.parquet"))


def make_requests(art, logs: list[Path], n_requests: int, n_candidates: int, seed: int = 0) -> list[dict]:
    """``n_requests`` bodies of ``n_candidates`` rows each, drawn from the logs (or made up from the vocabularies
    when no logs are given)."""
    rng = np.random.default_rng(seed)
    cols = art.required_columns + ([art.item_id_column] if art.item_id_column else [])
    if logs:
        frame = pl.concat([pl.read_parquet(p, columns=[c for c in cols if c]) for p in logs])
    else:
        n = 20_000
        data = {}
        for c in art.encoder.categorical:
            vocab = art.encoder.vocabularies[c]["value"]
            data[c] = vocab.sample(n, with_replacement=True, seed=seed)
        for c in art.encoder.numeric_all:
            data[c] = np.abs(rng.normal(art.encoder.stats[c]["mean"], art.encoder.stats[c]["std"], n))
        if art.item_id_column:
            data[art.item_id_column] = np.arange(n)
        frame = pl.DataFrame(data)
    out = []
    for i in range(n_requests):
        rows = frame[rng.choice(frame.height, n_candidates, replace=False).tolist()]
        shared = [c for c in REQUEST_COLUMNS if c in rows.columns]
        request = {c: rows[c][0] for c in shared}
        cands = rows.drop(shared).to_dicts()
        out.append({"request_id": i, "request": request, "candidates": cands})
    return out


def summary(name: str, batch: int, n_candidates: int, times_s: list[float]) -> dict:
    t = np.asarray(times_s) * 1e3
    p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
    return {
        "case": name,
        "requests_per_call": batch,
        "candidates_per_call": batch * n_candidates,
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": float(t.mean()),
        "candidates_per_s": batch * n_candidates / float(np.mean(times_s)),
        "calls": len(t),
        "target_p99_ms": TARGETS_MS.get((name, batch)),
    }


def bench_in_process(art, bodies: list[dict], iters: int, warmup: int, batch: int) -> list[float]:
    times = []
    for k in range(warmup + iters):
        if batch == 1:
            b = bodies[k % len(bodies)]
            t0 = time.perf_counter()
            art.rank(b["candidates"], request=b["request"])
        else:
            group = [bodies[(k * batch + j) % len(bodies)] for j in range(batch)]
            t0 = time.perf_counter()
            art.rank_many([{"candidates": b["candidates"], "request": b["request"]} for b in group])
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(
    artifact: Path, bodies: list[dict], iters: int, warmup: int, batch: int, tmp: Path
) -> dict[int, list[float]]:
    import httpx

    port = _free_port()
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "src/serve.py",
            f"artifact={artifact}",
            f"port={port}",
            "host=127.0.0.1",
            "threads=1",
            "log_level=warning",
            f"hydra.run.dir={tmp / 'serve'}",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    out: dict[int, list[float]] = {}
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        headers = {"content-type": "application/json"}
        single = [json.dumps(b).encode() for b in bodies]
        batched = [
            json.dumps({"requests": [bodies[(k * batch + j) % len(bodies)] for j in range(batch)]}).encode()
            for k in range(len(bodies))
        ]
        for size, path, payloads in ((1, "/rank", single), (batch, "/rank/batch", batched)):
            times = []
            for k in range(warmup + iters):
                t0 = time.perf_counter()
                resp = client.post(path, content=payloads[k % len(payloads)], headers=headers)
                resp.json()
                dt = time.perf_counter() - t0
                if resp.status_code != 200:
                    raise RuntimeError(f"{path} answered {resp.status_code}: {resp.text[:500]}")
                if k >= warmup:
                    times.append(dt)
            out[size] = times
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path, default=None, help="an exported artifact (default: train + export one)")
    ap.add_argument("--logs", type=Path, nargs="*", default=None, help="raw logs to draw candidates from")
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--batch", type=int, default=8, help="requests per batched call")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as d:
        tmp = Path(d)
        if args.artifact is None:
            print("training and exporting a small run (src/train.py debug=fast, default network) ...", flush=True)
            artifact, logs = make_artifact(tmp)
        else:
            artifact, logs = args.artifact, list(args.logs or [])
        from mtrank.serving import load_artifact

        art = load_artifact(artifact)
        bodies = make_requests(art, logs, 64, args.candidates)
        rows = [
            summary("in-process", 1, args.candidates, bench_in_process(art, bodies, args.iters, args.warmup, 1)),
            summary(
                "in-process",
                args.batch,
                args.candidates,
                bench_in_process(art, bodies, max(args.iters // args.batch, 30), args.warmup // 2, args.batch),
            ),
        ]
        if not args.no_http:
            http = bench_http(artifact, bodies, args.iters, args.warmup, args.batch, tmp)
            rows += [
                summary("HTTP", 1, args.candidates, http[1]),
                summary("HTTP", args.batch, args.candidates, http[args.batch]),
            ]
    load_after = os.getloadavg()
    print(
        f"\nartifact {art.artifact_id} ({art.manifest['network']['format']}), tasks {art.tasks}, device cpu, "
        f"torch threads 1, {os.cpu_count()} CPUs; load average before {load_before[0]:.2f} / {load_before[1]:.2f} / "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}"
    )
    print("\n| case | requests × candidates per call | p50 ms | p99 ms | candidates/s | target p99 | met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        target = r["target_p99_ms"]
        met = "—" if target is None else ("yes" if r["p99_ms"] <= target else "**no**")
        print(
            f"| {r['case']} | {r['requests_per_call']} × {args.candidates} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['candidates_per_s']:,.0f} | {'—' if target is None else f'≤ {target:.0f} ms'} | {met} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_before": load_before, "load_after": load_after}, indent=2))


if __name__ == "__main__":
    main()
