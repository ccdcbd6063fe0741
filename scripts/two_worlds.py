"""The "Two worlds" tables of docs/online_ab.md from simulate_ab run folders (their ``results.json``).

    python scripts/two_worlds.py --runs simulated=/tmp/me/sim/run_s0,/tmp/me/sim/run_s1,/tmp/me/sim/run_s2 \\
        --runs kuairand_fitted=/tmp/me/fit/run_s0,/tmp/me/fit/run_s1,/tmp/me/fit/run_s2

Prints Markdown: the policies' test AUROC beside the truth's (oracle) per world, Table 1 and its diagnostic arms
(propensity lift vs the binary model, 95 % interval, per seed), offline vs online BO on fresh traffic (lift vs the
hand-picked weights), the response model's held-out fit quality, and the wall times; with ``--logs
world=<glob>``, how much the types' true probabilities differ in each world's training log.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TYPES = ("save", "click", "long_click", "closeup")
ARMS = {
    "treatment": "multi-task, hand-picked",
    "treatment_iw": "multi-task, same valuation",
    "oracle_hand_picked": "oracle, hand-picked",
}


def lift(d: dict) -> str:
    star = " *" if d["significant"] else ""
    return f"{100 * d['value']:+.2f}% [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]{star}"


def load(spec: str) -> tuple[str, list[dict]]:
    name, _, runs = spec.partition("=")
    return name, [json.loads((Path(r) / "results.json").read_text()) for r in runs.split(",")]


def auroc_table(worlds: dict[str, list[dict]]) -> str:
    lines = ["| world | model | " + " | ".join(TYPES) + " |", "|---|---|" + "---:|" * len(TYPES)]
    for name, res in worlds.items():
        rows: dict[str, list[str]] = {}
        for role, path in res[0]["models"].items():
            m = json.loads((Path(path) / "metrics.json").read_text())["metrics"]
            rows[role] = [f"{m.get(f'test/{t}/auroc', float('nan')):.4f}" for t in TYPES]
            rows["truth (oracle AUROC)"] = [f"{m.get(f'test/{t}/oracle_auroc', float('nan')):.4f}" for t in TYPES]
        for label in ("control", "treatment", "truth (oracle AUROC)"):
            shown = {"control": "binary", "treatment": "multi-task"}.get(label, label)
            lines.append(f"| {name} | {shown} | " + " | ".join(rows[label]) + " |")
    return "\n".join(lines)


def table1(worlds: dict[str, list[dict]], kind: str) -> str:
    lines = ["| world | seed | arm | " + " | ".join(TYPES) + " |", "|---|---|---|" + "---|" * len(TYPES)]
    for name, res in worlds.items():
        for r in res:
            for arm, label in ARMS.items():
                if arm in r["table1"]["lifts"]:
                    cells = [lift(r["table1"]["lifts"][arm][kind][t]) for t in TYPES]
                    lines.append(f"| {name} | {r['settings']['seed']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bo(worlds: dict[str, list[dict]]) -> str:
    lines = [
        "| world | seed | weights | w (save, click, long_click, closeup) | offline f_long_click lift | "
        + " | ".join(TYPES)
        + " |",
        "|---|---|---|---|---:|" + "---|" * len(TYPES),
    ]
    for name, res in worlds.items():
        for r in res:
            for row in r["final"]["offline"]:
                if row["arm"] == "hand_picked":
                    continue
                w = ", ".join(f"{row['weights'][t]:.2f}" for t in TYPES)
                off = f"{100 * row['offline_lift']['long_click']:+.2f}%"
                cells = [lift(r["final"]["lifts"][row["arm"]]["propensity"][t]) for t in TYPES]
                lines.append(
                    f"| {name} | {r['settings']['seed']} | {row['source']} | {w} | {off} | " + " | ".join(cells) + " |"
                )
    return "\n".join(lines)


def fit_quality(worlds: dict[str, list[dict]]) -> str:
    out = []
    for name, res in worlds.items():
        fit = res[0]["world"].get("fit")
        if not fit:
            continue
        lines = [f"{name}: response model {res[0]['world'].get('response_model')}", ""]
        lines += [
            "| split | metric | " + " | ".join(fit["held_out"]) + " |",
            "|---|---|" + "---:|" * len(fit["held_out"]),
        ]
        for split in ("val", "held_out"):
            for q in ("auroc", "ece", "n_pos"):
                vals = [fit[split][t].get(q) for t in fit["held_out"]]
                cells = ["n/a" if v is None else (f"{v:.0f}" if q == "n_pos" else f"{v:.4f}") for v in vals]
                lines.append(
                    f"| {'test (held out)' if split == 'held_out' else 'val'} | {q} | " + " | ".join(cells) + " |"
                )
        out.append("\n".join(lines))
    return "\n\n".join(out)


def timings(worlds: dict[str, list[dict]]) -> str:
    lines = [
        "| world | seed | total s | " + " | ".join(("models", "table1", "offline_bo", "online_bo", "final")) + " |"
    ]
    lines.append("|---|---|---:|" + "---:|" * 5)
    for name, res in worlds.items():
        for r in res:
            t = r["timings_seconds"]
            cells = [f"{t.get(k, 0):.0f}" for k in ("models", "table1", "offline_bo", "online_bo", "final")]
            lines.append(f"| {name} | {r['settings']['seed']} | {t['total']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def type_correlations(logs: dict[str, str]) -> str:
    """Correlation of the true logits of the types at position 0, over the rows of a world's log (its first file):
    how far the engagement types are different functions of the same row."""
    import glob

    import numpy as np
    import polars as pl

    pairs = [(a, b) for i, a in enumerate(TYPES) for b in TYPES[i + 1 :]]
    lines = ["| world | rows | " + " | ".join(f"{a}–{b}" for a, b in pairs) + " |", "|---|---:|" + "---:|" * len(pairs)]
    for name, pattern in logs.items():
        d = pl.read_parquet(sorted(glob.glob(pattern))[0]).filter(pl.col("position") == 0)
        z = {t: np.log(d[f"p_true_{t}"].to_numpy()) - np.log1p(-d[f"p_true_{t}"].to_numpy()) for t in TYPES}
        cells = [f"{np.corrcoef(z[a], z[b])[0, 1]:.2f}" for a, b in pairs]
        lines.append(f"| {name} | {d.height} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", action="append", required=True, help="world=run_dir,run_dir,... (one per seed)")
    ap.add_argument("--logs", action="append", default=[], help="world=glob of its training log's Parquet files")
    args = ap.parse_args()
    worlds = dict(load(s) for s in args.runs)
    if args.logs:
        logs = dict(x.partition("=")[::2] for x in args.logs)
        print(f"### Correlation of the types' true logits (position 0)\n\n{type_correlations(logs)}\n")
    for title, text in (
        ("Policies' test AUROC and the truth's", auroc_table(worlds)),
        ("Table 1 and diagnostic arms: propensity lift vs the binary model", table1(worlds, "propensity")),
        (
            "The same, expected propensity (true probabilities of the shown impressions)",
            table1(worlds, "expected_propensity"),
        ),
        ("Offline vs online BO on fresh traffic: propensity lift vs the hand-picked weights", bo(worlds)),
        ("Response model fit quality", fit_quality(worlds)),
        ("Wall time", timings(worlds)),
    ):
        print(f"### {title}\n\n{text}\n")


if __name__ == "__main__":
    main()
