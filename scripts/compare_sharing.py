"""Shared bottom vs MMoE on the post's four tasks and the extended six: per-head test AUROC against the
simulator's oracle AUROC, mean and spread over seeds, as one Markdown table.

    # train the 4 variants x 3 seeds (12 runs, one after another), then print the table
    python scripts/compare_sharing.py --run --seeds 1 2 3 --data-dir /tmp/me/data --log-dir /tmp/me/logs
    # only collect the runs already made and write the table into docs/mmoe.md (between its markers)
    python scripts/compare_sharing.py --seeds 1 2 3 --log-dir /tmp/me/logs --write docs/mmoe.md

Each run is ``src/train.py <variant overrides> seed=<s> task_name=cmp_<variant>_s<s>``; its figures are
read from the newest ``<log-dir>/cmp_<variant>_s<s>/runs/*/metrics.json`` (keys ``test/<task>/auroc``,
``test/<task>/oracle_auroc``, ``<stage>/<task>/n_pos``, and ``test/gates/...`` for MMoE).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("save", "click", "long_click", "closeup", "hide", "checkout")
# name -> (column title, train.py overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "shared4": ("shared bottom, 4 tasks", ["experiment=multitask"]),
    "mmoe4": ("MMoE, 4 tasks", ["experiment=mmoe"]),
    "shared6": ("shared bottom, 6 tasks", ["experiment=multitask_ext"]),
    "mmoe6": ("MMoE, 6 tasks", ["experiment=mmoe", "tasks=related_products_ext"]),
}
BEGIN, END = "<!-- compare_sharing:begin -->", "<!-- compare_sharing:end -->"


def task_name(variant: str, seed: int) -> str:
    return f"cmp_{variant}_s{seed}"


def command(variant: str, seed: int, data_dir: str | None, log_dir: str | None, extra: list[str]) -> list[str]:
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *VARIANTS[variant][1],
        f"seed={seed}",
        f"task_name={task_name(variant, seed)}",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
    ]
    if data_dir:
        cmd.append(f"paths.data_dir={data_dir}")
    if log_dir:
        cmd.append(f"paths.log_dir={log_dir}")
    return cmd + list(extra)


def latest_metrics(log_dir: Path, name: str) -> dict[str, float] | None:
    found = sorted((log_dir / name / "runs").glob("*/metrics.json"))
    if not found:
        return None
    return json.loads(found[-1].read_text())["metrics"]


def mean_sd(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def table(runs: dict[str, list[dict[str, float]]], seeds: list[int]) -> str:
    """Rows: heads; columns: n_pos and oracle (from any run), then per variant ``auroc ± sd (gap)``
    where gap = oracle_auroc − auroc on the same test rows, averaged over seeds."""
    variants = [v for v in VARIANTS if runs.get(v)]
    any_runs = [m for v in variants for m in runs[v]]
    head = ["head", "test positives (val)", "oracle AUROC"] + [VARIANTS[v][0] for v in variants]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    worst = {v: -math.inf for v in variants}
    for t in TASKS:
        ref = next((m for m in any_runs if f"test/{t}/oracle_auroc" in m), None)
        if ref is None:
            continue
        n_test, n_val = ref.get(f"test/{t}/n_pos", math.nan), ref.get(f"val/{t}/n_pos", math.nan)
        o_mean, _ = mean_sd([m.get(f"test/{t}/oracle_auroc") for m in any_runs])
        row = [t, f"{n_test:.0f} ({n_val:.0f})", f"{o_mean:.4f}"]
        for v in variants:
            ms = [m for m in runs[v] if f"test/{t}/auroc" in m]
            if not ms:
                row.append("–")
                continue
            a, sd = mean_sd([m[f"test/{t}/auroc"] for m in ms])
            g, _ = mean_sd([m[f"test/{t}/oracle_auroc"] - m[f"test/{t}/auroc"] for m in ms])
            worst[v] = max(worst[v], g)
            row.append(f"{a:.4f} ± {sd:.4f} ({g:+.4f})")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| **largest gap** | | | " + " | ".join(f"**{worst[v]:+.4f}**" for v in variants) + " |")
    n = {v: len(runs[v]) for v in variants}
    note = (
        f"Cells: test AUROC, mean ± sample standard deviation over seeds {seeds} "
        f"(runs found: {', '.join(f'{v} {k}' for v, k in n.items())}), and in brackets the mean gap "
        "oracle AUROC − AUROC on the same test rows. 'test positives (val)': how many positives each "
        "head's test (validation) metrics rest on."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def gate_table(metrics: dict[str, float], stage: str = "test") -> str:
    """Mean gate weight per expert (columns) per head (rows) of one MMoE run, and the gate entropy."""
    heads = [t for t in TASKS if f"{stage}/gates/{t}/entropy" in metrics]
    if not heads:
        return ""
    experts = sorted({k.rsplit("/", 1)[1] for k in metrics if k.startswith(f"{stage}/gates/{heads[0]}/")} - {"entropy"})
    lines = ["| head | " + " | ".join(experts) + " | entropy |", "|" + "---|" * (len(experts) + 2)]
    for t in heads:
        cells = [f"{metrics[f'{stage}/gates/{t}/{e}']:.3f}" for e in experts]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {metrics[f'{stage}/gates/{t}/entropy']:.3f} |")
    return "\n".join(lines) + "\n"


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between BEGIN and END in ``path`` (append both if absent); atomic write."""
    old = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in old and END in old:
        pre, rest = old.split(BEGIN, 1)
        new = pre + block + rest.split(END, 1)[1]
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--run", action="store_true", help="train the runs that are missing (sequentially)")
    p.add_argument("--rerun", action="store_true", help="with --run: train every run even if one exists")
    p.add_argument("--data-dir", default=None, help="paths.data_dir for the runs")
    p.add_argument("--log-dir", default=str(ROOT / "logs"), help="paths.log_dir of the runs")
    p.add_argument("--write", type=Path, default=None, help="Markdown file to put the tables in (between markers)")
    p.add_argument("extra", nargs="*", help="more train.py overrides for every run")
    args = p.parse_args(argv)
    log_dir = Path(args.log_dir)

    runs: dict[str, list[dict[str, float]]] = {}
    for v in args.variants:
        runs[v] = []
        for s in args.seeds:
            m = latest_metrics(log_dir, task_name(v, s))
            if args.run and (m is None or args.rerun):
                cmd = command(v, s, args.data_dir, args.log_dir, args.extra)
                print("+", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
                m = latest_metrics(log_dir, task_name(v, s))
            if m is None:
                print(f"missing run {task_name(v, s)} under {log_dir}", file=sys.stderr)
                continue
            runs[v].append(m)

    text = table(runs, args.seeds)
    for v in ("mmoe4", "mmoe6"):
        if runs.get(v):
            g = gate_table(runs[v][0])
            if g:
                text += (
                    f"\nTest gate weights of {VARIANTS[v][0]} (seed {args.seeds[0]}): mean weight per "
                    "expert per head, and the mean normalised gate entropy (1 = uniform).\n\n" + g
                )
    print(text)
    if args.write:
        write_between_markers(args.write, text)
        print(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
