"""How close does Ax get to the best utility weights, and how fast? A benchmark on the simulator.

On simulated predictions (``p_<task>`` = the simulator's true probabilities with logit noise) the problem of
``conf/utility/<utility>.yaml`` is solved three ways, all on the same data:

1. **dense search** of the weight simplex (S1, S2): a grid of step ``--grid-step`` over the free weights,
   then a finer grid (step ``--grid-step / 5``) around the two best feasible points and the baseline — the reference optimum f*;
2. **Ax** with the generation settings of ``conf/tune_utility.yaml`` (what ``src/tune_utility.py`` runs);
3. **random search** (Ax's quasi-random Sobol points) with the same budget, over ``--random-seeds`` seeds.

It prints f*, the baseline's share of it, trials-to-99% of f* (a trial counts when it is feasible,
S3–S5, and reaches 0.99·f*; the baseline arm is not counted) for Ax and for random search, the best each
reaches within the budget, the best feasible share of f* after ``--at`` trials (10/20/30) for each seed, and the
seconds to generate a GP trial. Results and a convergence plot go to ``--out``.

``--predictions FILE`` tunes on a trained model's predictions instead of simulated ones (what a user runs:
``src/train.py experiment=multitask`` writes ``predictions.parquet`` in its run folder); the dense search is
cached in ``--out`` (``dense.json``, keyed by file, problem and grid) so that several runs share it.
``--settings`` compares generation settings (each a space-separated group of Hydra overrides) on the same data
and prints the trade-off table: seconds per GP trial against the share of f* at 10/20/30 trials.

    python scripts/utility_bo_benchmark.py --n-impressions 300000 --out /tmp/bench
    python scripts/utility_bo_benchmark.py --predictions logs/multitask/runs/<run>/predictions.parquet \
        --ax-seeds 3 --random-seeds 0 --settings "generation.simplex=derived" "generation.simplex=box"
    python scripts/utility_bo_benchmark.py n_trials=40 utility=related_products   # extra args: Hydra overrides
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="tune_utility", overrides=["predictions=unused", *overrides])


def grid_points(problem, step: float, centre: dict[str, float] | None = None, radius: float | None = None):
    """Every weight vector on a grid of ``step`` over the free weights (within S2, and within ``radius`` of
    ``centre`` when given) whose derived weight also lies within its bounds (S1 exact)."""
    free = [t for t in problem.tasks if t != problem.derived]
    axes = []
    n_combos = 1
    for t in free:
        lo, hi = problem.bounds[t]
        if centre is not None:
            lo, hi = max(lo, centre[t] - radius), min(hi, centre[t] + radius)
        k = int(np.floor((hi - lo) / step + 1e-9))
        axes.append(lo + step * np.arange(k + 1))
        n_combos *= k + 1
    if n_combos > 300_000:
        raise SystemExit(
            f"a grid of step {step} has {n_combos} points over {len(free)} free weights: raise --grid-step"
        )
    lo_d, hi_d = problem.bounds[problem.derived]
    out = []
    for combo in itertools.product(*axes):
        d = problem.total - float(np.sum(combo))
        if lo_d - 1e-12 <= d <= hi_d + 1e-12:
            w = {t: float(v) for t, v in zip(free, combo)}
            w[problem.derived] = d
            out.append({t: w[t] for t in problem.tasks})
    return out


def dense_search(problem, evaluator, base_metrics, grid_step: float, refine_top: int = 3):
    from mtrank.tuning.outcomes import is_feasible

    obj = problem.objective_metric
    seen: dict[tuple, dict[str, float]] = {}

    def run(points):
        for w in points:
            key = tuple(round(w[t], 10) for t in problem.tasks)
            if key not in seen:
                seen[key] = problem.metrics_of(evaluator.evaluate(w))

    t0 = time.perf_counter()
    coarse = grid_points(problem, grid_step)
    run(coarse)
    feas = sorted(
        ((m[obj], k) for k, m in seen.items() if is_feasible(m, problem.constraints, base_metrics)), reverse=True
    )
    centres = [dict(zip(problem.tasks, k)) for _, k in feas[:refine_top]] + [dict(problem.weights)]
    for c in centres:
        run(grid_points(problem, grid_step / 5, c, grid_step))
    feas = [(m[obj], k) for k, m in seen.items() if is_feasible(m, problem.constraints, base_metrics)]
    best_val, best_key = max(feas)
    return {
        "optimum": best_val,
        "weights": dict(zip(problem.tasks, best_key)),
        "metrics": seen[best_key],
        "points": len(seen),
        "coarse_points": len(coarse),
        "feasible_points": len(feas),
        "seconds": time.perf_counter() - t0,
    }


def curve(loop, problem):
    """(objective, feasible) of each non-baseline completed trial, in trial order."""
    recs = [r for r in loop.records() if r.status == "COMPLETED" and not r.is_baseline]
    return [(r.metrics[problem.objective_metric], bool(r.feasible)) for r in recs], recs


def load_evaluator(args, cfg, problem):
    """The evaluator of every f_t (a predictions file, or simulated predictions) and a line saying which."""
    from mtrank.tuning.synthetic import simulated_predictions
    from mtrank.utility.objectives import UtilityEvaluator, read_predictions

    t0 = time.perf_counter()
    if args.predictions is not None:
        frame = read_predictions(args.predictions, problem.tasks, problem.label_tasks, cfg.prob_prefix)
        what = f"{args.predictions} ({cfg.prob_prefix}<task>)"
    else:
        frame = simulated_predictions(args.n_impressions, noise=args.noise, seed=args.data_seed, tasks=problem.tasks)
        what = f"simulated, noise {args.noise}"
    ev = UtilityEvaluator.from_frame(frame, problem.tasks, problem.label_tasks, cfg.metric, cfg.prob_prefix)
    return ev, f"{ev.n} impressions, {what}, read in {time.perf_counter() - t0:.1f}s"


def cached_dense(args, cfg, problem, evaluator, base):
    """``dense_search``, reused from ``<out>/dense.json`` when the data, the problem and the grid are the same."""
    src = str(args.predictions.resolve()) if args.predictions is not None else f"sim:{args.n_impressions}:{args.noise}"
    if args.predictions is not None:
        st = args.predictions.stat()
        src += f":{st.st_size}:{st.st_mtime_ns}"
    key = hashlib.sha1(
        json.dumps([src, args.data_seed, args.grid_step, str(cfg.metric), repr(problem)]).encode()
    ).hexdigest()
    cache = args.out / "dense.json"
    if cache.exists():
        got = json.loads(cache.read_text())
        if got.get("key") == key:
            return {**got["dense"], "cached": True}
    dense = dense_search(problem, evaluator, base, args.grid_step, refine_top=2)
    cache.write_text(json.dumps({"key": key, "dense": dense}))
    return dense


def run_one(kind, label, s, gen, problem, evaluator, n_trials, f_star, args):
    """One tuning run; its row of results and its best-so-far curve."""
    from mtrank.tuning.report import best_so_far, trials_to_fraction
    from mtrank.tuning.utility_task import run_tuning

    state = args.out / f"{kind}_{hashlib.sha1(label.encode()).hexdigest()[:8]}_seed{s}.json"
    state.unlink(missing_ok=True)
    t1 = time.perf_counter()
    loop = run_tuning(problem, evaluator, n_trials, gen, state, resume=False, label=f"{kind}{s}")
    wall = time.perf_counter() - t1
    pts, recs = curve(loop, problem)
    vals, feas = [v for v, _ in pts], [f for _, f in pts]
    bsf = best_so_far(vals, feas)
    gp = [r.seconds.get("gen_seconds", 0.0) for r in recs if r.node not in ("Sobol", "CenterOfSearchSpace")]
    best = max((v for v, f in pts if f), default=float("nan"))
    row = {
        "setting": label,
        "seed": s,
        "trials_to_target": trials_to_fraction(vals, feas, f_star, args.fraction),
        "trials_to_also": {f"{q:g}": trials_to_fraction(vals, feas, f_star, q) for q in args.also},
        "best": best,
        "best_fraction": best / f_star,
        "fraction_at": {k: (bsf[k - 1] / f_star if k <= len(bsf) else None) for k in args.at},
        "n_feasible": sum(feas),
        "wall_seconds": wall,
        "seconds_per_trial": wall / max(1, len(recs)),
        "gen_seconds_mean": float(np.mean([r.seconds.get("gen_seconds", 0.0) for r in recs])),
        "eval_seconds_mean": float(np.mean([r.seconds.get("eval_seconds", 0.0) for r in recs])),
        "gp_gen_seconds_mean": float(np.mean(gp)) if gp else float("nan"),
        "gp_gen_seconds_max": float(np.max(gp)) if gp else float("nan"),
    }
    at = ", ".join(f"@{k} {share(v)}" for k, v in row["fraction_at"].items())
    gp_text = f"GP trial {row['gp_gen_seconds_mean']:.2f}s to generate (max {row['gp_gen_seconds_max']:.2f}), "
    print(
        f"{kind:6s} {label or 'default'!s:40s} seed {s}: best {best / f_star:.4f} of f* ({at}); "
        f"{sum(feas)}/{len(pts)} feasible; to {args.fraction:g}: {row['trials_to_target']}; "
        f"{gp_text if gp else ''}{row['seconds_per_trial']:.2f}s per trial",
        flush=True,
    )
    return row, bsf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-impressions", type=int, default=300_000)
    ap.add_argument("--noise", type=float, default=0.5, help="logit noise of the simulated predictions")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--grid-step", type=float, default=0.05)
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--ax-seeds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.99, help="the target: this share of the optimum")
    ap.add_argument("--also", type=float, nargs="*", default=[0.995, 0.999], help="further targets to report")
    ap.add_argument("--at", type=int, nargs="*", default=[10, 20, 30], help="report the best share of f* here")
    ap.add_argument("--predictions", type=Path, default=None, help="a predictions Parquet file instead of simulating")
    ap.add_argument(
        "--settings", nargs="*", default=[""], help='generation settings to compare, e.g. "generation.simplex=box"'
    )
    ap.add_argument("--verbose", action="store_true", help="a line per trial")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mtrank_utility_bo_benchmark"))
    args, overrides = ap.parse_known_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("mtrank").setLevel(logging.INFO if args.verbose else logging.WARNING)

    from omegaconf import OmegaConf

    from mtrank.tuning.generation import GenerationConfig, quiet_ax
    from mtrank.tuning.problem import UtilityProblem
    from mtrank.tuning.report import write_json

    quiet_ax()
    cfg = compose(overrides)
    problem = UtilityProblem.from_mapping(OmegaConf.to_container(cfg.utility, resolve=True), "utility")
    n_trials = int(cfg.n_trials)
    args.out.mkdir(parents=True, exist_ok=True)
    evaluator, what = load_evaluator(args, cfg, problem)
    print(
        f"data: {what}; metric {cfg.metric}; maximise {problem.objective_metric} s.t. "
        f"{[str(c) for c in problem.constraints]}; {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    base = problem.metrics_of(evaluator.evaluate(problem.weights))
    dense = cached_dense(args, cfg, problem, evaluator, base)
    f_star = dense["optimum"]
    print(
        f"dense search: {dense['points']} points ({dense['feasible_points']} feasible) in {dense['seconds']:.0f}s"
        f"{' (cached)' if dense.get('cached') else ''}; optimum {problem.objective_metric} = {f_star:.6f} at "
        f"{fmt(dense['weights'])}",
        flush=True,
    )
    print(
        f"baseline {fmt(problem.weights)}: {base[problem.objective_metric]:.6f} "
        f"= {base[problem.objective_metric] / f_star:.4f} of the optimum",
        flush=True,
    )

    results: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "overrides": overrides,
        "n_trials": n_trials,
        "dense": dense,
        "baseline": {"weights": problem.weights, "metrics": base},
        "ax": [],
        "random": [],
    }
    curves: dict[str, list] = {}
    for label in args.settings:
        gen_map = OmegaConf.to_container(compose([*overrides, *label.split()]).generation, resolve=True)
        results.setdefault("generation", {})[label] = gen_map
        for s in range(args.ax_seeds):
            gen = GenerationConfig.from_mapping({**gen_map, "seed": s})
            row, bsf = run_one("ax", label, s, gen, problem, evaluator, n_trials, f_star, args)
            results["ax"].append(row)
            curves[f"ax {label} seed {s}".replace("  ", " ")] = bsf
    for s in range(args.random_seeds):
        gen = GenerationConfig(method="random_search", seed=s, noiseless=True)
        row, bsf = run_one("random", "random_search", s, gen, problem, evaluator, n_trials, f_star, args)
        results["random"].append(row)
        curves[f"random seed {s}"] = bsf

    print(f"\nsummary ({what}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(
        f"  dense-search optimum f* = {f_star:.6f} ({dense['points']} points); baseline "
        f"{base[problem.objective_metric] / f_star:.4f} of f*"
    )
    head = " | ".join(f"share of f* @{k} (per seed)" for k in args.at)
    print(f"  | setting | s per GP trial (mean, max) | {head} |")
    for kind, label in [("ax", lb) for lb in args.settings] + [("random", "random_search")] * (args.random_seeds > 0):
        rows = [r for r in results[kind] if r["setting"] == label]
        cells = " | ".join(" / ".join(share(r["fraction_at"][k]) for r in rows) for k in args.at)
        gp = [r["gp_gen_seconds_mean"] for r in rows]
        secs = "no GP" if kind == "random" else f"{np.mean(gp):.2f} ({max(r['gp_gen_seconds_max'] for r in rows):.2f})"
        print(f"  | {label or 'default'} | {secs} | {cells} |")
    write_json(args.out / "benchmark.json", results)
    plot(
        curves,
        f_star,
        base[problem.objective_metric],
        args.fraction,
        args.out / "convergence.png",
        problem.objective_metric,
    )
    print(f"  written: {args.out / 'benchmark.json'}, {args.out / 'convergence.png'}")


def share(x: float | None) -> str:
    """A share of f* for the table: '—' past the budget, 'none' before the first feasible trial."""
    return "—" if x is None else ("none" if x != x else f"{x:.4f}")


def fmt(w: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:+.3f}" for k, v in w.items()) + "}"


def plot(curves: dict[str, list], f_star: float, base: float, fraction: float, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, ys in curves.items():
        style = dict(c="C0", lw=2) if label.startswith("ax") else dict(c="grey", lw=1, alpha=0.7)
        ax.step(range(1, len(ys) + 1), [y / f_star for y in ys], where="post", label=label, **style)
    ax.axhline(fraction, ls="--", c="C3", lw=1, label=f"{fraction:.0%} of dense-search optimum")
    ax.axhline(base / f_star, ls=":", c="C2", lw=1, label="baseline (hand-picked)")
    ax.set_xlabel("trial (baseline not counted)")
    ax.set_ylabel(f"best feasible {name} / optimum")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
