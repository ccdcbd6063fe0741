"""How close does Ax get to the best utility weights, and how fast? A benchmark on the simulator.

On simulated predictions (``p_<task>`` = the simulator's true probabilities with logit noise) the problem of
``conf/utility/<utility>.yaml`` is solved three ways, all on the same data:

1. **dense search** of the weight simplex (S1, S2): a grid of step ``--grid-step`` over the free weights,
   then a finer grid (step ``--grid-step / 5``) around the two best feasible points and the baseline — the reference optimum f*;
2. **Ax** with the generation settings of ``conf/tune_utility.yaml`` (what ``src/tune_utility.py`` runs);
3. **random search** (Ax's quasi-random Sobol points) with the same budget, over ``--random-seeds`` seeds.

It prints f*, the baseline's share of it, trials-to-99% of f* (a trial counts when it is feasible,
S3–S5, and reaches 0.99·f*; the baseline arm is not counted) for Ax and for random search, the best each
reaches within the budget, and the wall time per trial. Results and a convergence plot go to ``--out``.

    python scripts/utility_bo_benchmark.py --n-impressions 300000 --out /tmp/bench
    python scripts/utility_bo_benchmark.py n_trials=40 utility=related_products   # extra args: Hydra overrides
"""

from __future__ import annotations

import argparse
import itertools
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-impressions", type=int, default=300_000)
    ap.add_argument("--noise", type=float, default=0.5, help="logit noise of the simulated predictions")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--grid-step", type=float, default=0.05)
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--ax-seeds", type=int, default=1)
    ap.add_argument("--fraction", type=float, default=0.99, help="the target: this share of the optimum")
    ap.add_argument("--also", type=float, nargs="*", default=[0.995, 0.999], help="further targets to report")
    ap.add_argument("--verbose", action="store_true", help="a line per trial")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mtrank_utility_bo_benchmark"))
    args, overrides = ap.parse_known_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("mtrank").setLevel(logging.INFO if args.verbose else logging.WARNING)

    from omegaconf import OmegaConf

    from mtrank.tuning.generation import GenerationConfig, quiet_ax
    from mtrank.tuning.problem import UtilityProblem
    from mtrank.tuning.report import best_so_far, trials_to_fraction, write_json
    from mtrank.tuning.synthetic import simulated_predictions
    from mtrank.tuning.utility_task import run_tuning
    from mtrank.utility.objectives import UtilityEvaluator

    quiet_ax()
    cfg = compose(overrides)
    problem = UtilityProblem.from_mapping(OmegaConf.to_container(cfg.utility, resolve=True), "utility")
    gen_map = OmegaConf.to_container(cfg.generation, resolve=True)
    n_trials = int(cfg.n_trials)
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    frame = simulated_predictions(args.n_impressions, noise=args.noise, seed=args.data_seed, tasks=problem.tasks)
    evaluator = UtilityEvaluator.from_frame(frame, problem.tasks, problem.label_tasks, cfg.metric)
    print(
        f"data: {evaluator.n} simulated impressions, noise {args.noise}, built in {time.perf_counter() - t0:.1f}s; "
        f"metric {cfg.metric}; "
        f"maximise {problem.objective_metric} s.t. {[str(c) for c in problem.constraints]}",
        flush=True,
    )
    base = problem.metrics_of(evaluator.evaluate(problem.weights))

    dense = dense_search(problem, evaluator, base, args.grid_step, refine_top=2)
    f_star = dense["optimum"]
    print(
        f"dense search: {dense['points']} points ({dense['feasible_points']} feasible) in {dense['seconds']:.0f}s; "
        f"optimum {problem.objective_metric} = {f_star:.6f} at {fmt(dense['weights'])}",
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
        "generation": gen_map,
        "dense": dense,
        "baseline": {"weights": problem.weights, "metrics": base},
        "ax": [],
        "random": [],
    }
    curves: dict[str, list] = {}
    for kind, seeds in (("ax", range(args.ax_seeds)), ("random", range(args.random_seeds))):
        for s in seeds:
            gen = (
                GenerationConfig.from_mapping({**gen_map, "seed": s})
                if kind == "ax"
                else GenerationConfig(method="random_search", seed=s, noiseless=True)
            )
            state = args.out / f"{kind}_seed{s}.json"
            if state.exists():
                state.unlink()
            t1 = time.perf_counter()
            loop = run_tuning(problem, evaluator, n_trials, gen, state, resume=False, label=f"{kind}{s}")
            wall = time.perf_counter() - t1
            pts, recs = curve(loop, problem)
            vals, feas = [v for v, _ in pts], [f for _, f in pts]
            k = trials_to_fraction(vals, feas, f_star, args.fraction)
            also = {f"{q:g}": trials_to_fraction(vals, feas, f_star, q) for q in args.also}
            best = max((v for v, f in pts if f), default=float("nan"))
            gen_s = [r.seconds.get("gen_seconds", 0.0) for r in recs]
            ev_s = [r.seconds.get("eval_seconds", 0.0) for r in recs]
            row = {
                "seed": s,
                "trials_to_target": k,
                "trials_to_also": also,
                "best": best,
                "best_fraction": best / f_star,
                "n_feasible": sum(feas),
                "wall_seconds": wall,
                "seconds_per_trial": wall / max(1, len(recs)),
                "gen_seconds_mean": float(np.mean(gen_s)),
                "eval_seconds_mean": float(np.mean(ev_s)),
                "gp_gen_seconds_mean": float(
                    np.mean(
                        [
                            r.seconds.get("gen_seconds", 0.0)
                            for r in recs
                            if r.node not in ("Sobol", "CenterOfSearchSpace")
                        ]
                        or [np.nan]
                    )
                ),
            }
            results[kind].append(row)
            curves[f"{kind} seed {s}"] = best_so_far(vals, feas)
            print(
                f"{kind:6s} seed {s}: trials to {args.fraction:.0%} of optimum: {k if k else f'not within {n_trials}'}; "
                f"best {best:.6f} ({best / f_star:.4f}); {sum(feas)}/{len(pts)} feasible; to {also}; "
                f"{row['seconds_per_trial']:.2f}s per trial (generate {row['gen_seconds_mean']:.2f}s, "
                f"evaluate {row['eval_seconds_mean']:.3f}s)",
                flush=True,
            )

    rk = [r["trials_to_target"] for r in results["random"]]
    print("\nsummary")
    print(
        f"  dense-search optimum f* = {f_star:.6f} ({dense['points']} points); baseline "
        f"{base[problem.objective_metric] / f_star:.4f} of f*"
    )
    for r in results["ax"]:
        print(
            f"  Ax (seed {r['seed']}): trials-to-{args.fraction:.0%} = {r['trials_to_target']}, best "
            f"{r['best_fraction']:.4f} of f* in {n_trials} trials, {r['seconds_per_trial']:.2f}s per trial "
            f"(GP trials {r['gp_gen_seconds_mean']:.2f}s to generate); trials to {r['trials_to_also']}"
        )
    print(
        f"  random search ({len(rk)} seeds): trials-to-{args.fraction:.0%} = {rk} "
        f"(reached in {sum(k is not None for k in rk)}/{len(rk)}), best fractions "
        f"{[round(r['best_fraction'], 4) for r in results['random']]}, "
        f"{np.mean([r['seconds_per_trial'] for r in results['random']]):.2f}s per trial; trials to "
        f"{[r['trials_to_also'] for r in results['random']]}"
    )
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
