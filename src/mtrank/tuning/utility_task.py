"""The job behind ``src/tune_utility.py``: choose the utility weights of Eq. 4 by solving Eq. 5 with Ax.

``mode=tune`` (default) runs the whole loop in this process — the hand-picked baseline arm first, then
``n_trials`` Ax trials, then (``compare_random``) random search with the same budget — and writes into
the run folder:

* ``best_weights.yaml`` — the best feasible weights (or the statement that no trial met S3–S5),
* ``trials.csv`` — one row per trial (weights, every f_t, feasibility, timings),
* ``trials.png`` — objective and constrained figures per trial, thresholds c_t·b_t dashed,
* ``ax_experiment.json`` — the Ax client snapshot: rerun with the same ``hydra.run.dir`` (or point
  ``state_file`` at it) to resume a killed run,
* ``summary.json`` — baseline, best, random-search comparator, wall time per trial,
* the random-search comparator's own ``random_search/`` folder with the same files.

``mode=evaluate`` computes every f_t for ``utility.weights`` and returns them: the job the Hydra sweeper
(``-m hparams_search=ax_utility``) launches per trial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from omegaconf import DictConfig, OmegaConf

from mtrank.tuning.ax_loop import AxLoop, TrialRecord
from mtrank.tuning.generation import GenerationConfig, quiet_ax
from mtrank.tuning.outcomes import thresholds
from mtrank.tuning.problem import UtilityProblem
from mtrank.tuning.report import (
    plot_trials,
    trial_table,
    write_json,
    write_text,
    write_yaml,
)
from mtrank.utility.objectives import UtilityEvaluator, read_predictions
from mtrank.utils.run_info import write_run_info

log = logging.getLogger(__name__)

__all__ = ["build_evaluator", "tune_utility", "run_tuning"]


def build_evaluator(cfg: DictConfig, problem: UtilityProblem) -> UtilityEvaluator:
    """The evaluator of every f_t the predictions file has labels for (the objective's and the constrained
    tasks' labels are required)."""
    path = cfg.get("predictions")
    if not path or path == "???":
        raise ValueError("predictions=<file> is required: a Parquet file of predictions (see mtrank.scoring.score)")
    label_prefix = cfg.get("label_prefix", "label_")
    schema = pl.read_parquet_schema(path) if Path(path).is_file() else {}
    label_tasks = problem.label_tasks + [
        t for t in problem.tasks if t not in problem.label_tasks and f"{label_prefix}{t}" in schema
    ]
    frame = read_predictions(path, problem.tasks, label_tasks, cfg.get("prob_prefix", "p_"), label_prefix)
    return UtilityEvaluator.from_frame(
        frame, problem.tasks, label_tasks, cfg.get("metric", "pr_auc"), cfg.get("prob_prefix", "p_"), label_prefix
    )


class _Wandb:
    """W&B run when ``wandb.enabled`` (offline unless ``wandb.mode=online``), else a no-op."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        w = cfg.get("wandb") or {}
        self.run = None
        if not w.get("enabled", False):
            return
        import wandb

        if str(w.get("mode", "offline")) != "online":
            from mtrank.utils.offline import use_wandb_offline

            use_wandb_offline()  # no socket, no DNS query unless the user opts in online
        self.run = wandb.init(
            project=w.get("project", "mtrank"),
            name=cfg.get("task_name"),
            dir=str(output_dir),
            mode=w.get("mode", "offline"),
            tags=list(cfg.get("tags") or []),
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        )

    def log(self, data: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(dict(data))

    def finish(self, table: pl.DataFrame, plot: Path, summary: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        import wandb

        self.run.log({"trials": wandb.Table(dataframe=table.to_pandas()), "trials_plot": wandb.Image(str(plot))})
        for k, v in summary.items():
            self.run.summary[k] = v
        self.run.finish()


def _line(loop: AxLoop, r: TrialRecord, label: str) -> str:
    recs = loop.records()
    best = loop.best(records=recs)
    obj = r.metrics.get(loop.objective)
    weights = ", ".join(f"{k[2:]}={v:+.3f}" for k, v in r.params.items())
    done = sum(1 for x in recs if not x.is_baseline and x.status in ("COMPLETED", "FAILED"))
    tag = "baseline" if r.is_baseline else f"{r.index} ({done}/{loop.n_trials})"
    return (
        f"[{label}] trial {tag} ({r.node}) {loop.objective}={obj:.5f} "
        f"{'feasible' if r.feasible else 'infeasible'}; best {best.metrics[loop.objective]:.5f} "
        f"(trial {best.index}) | {weights}"
        if best
        else f"[{label}] trial {tag} ({r.node}) {loop.objective}={obj:.5f} infeasible; none feasible yet | {weights}"
    )


def run_tuning(
    problem: UtilityProblem,
    evaluator: UtilityEvaluator,
    n_trials: int,
    generation: GenerationConfig,
    state_file: str | Path,
    resume: bool = True,
    label: str = "ax",
    on_trial: Any = None,
) -> AxLoop:
    """One Ax loop (baseline arm + ``n_trials``) evaluated in process; resumes from ``state_file``."""

    def evaluate(params: Mapping[str, Any]) -> dict[str, float]:
        return problem.metrics_of(evaluator.evaluate(problem.weights_of(params)))

    loop = AxLoop.open(
        state_file,
        resume=resume,
        space=problem.space,
        objective=problem.objective_metric,
        n_trials=n_trials,
        constraints=list(problem.constraints),
        generation=generation,
        baseline=problem.params(problem.weights),
        name=f"utility_{label}",
    )

    def report(r: TrialRecord) -> None:
        log.info(_line(loop, r, label))
        if on_trial is not None:
            on_trial(loop, r)

    loop.run(evaluate, report)
    return loop


def _summary(loop: AxLoop, problem: UtilityProblem, wall: float) -> dict[str, Any]:
    recs = [r for r in loop.records() if r.status == "COMPLETED" and not r.is_baseline]
    best = loop.best()
    gen = [r.seconds.get("gen_seconds", 0.0) for r in recs]
    ev = [r.seconds.get("eval_seconds", 0.0) for r in recs]
    return {
        "n_trials": len(recs),
        "n_feasible": sum(bool(r.feasible) for r in recs),
        "baseline": loop.baseline_values(),
        "thresholds": thresholds(loop.constraints, loop.baseline_values()),
        "best": None
        if best is None
        else {
            "trial": best.index,
            "is_baseline": best.is_baseline,
            "weights": problem.weights_of(best.params),
            "metrics": best.metrics,
            "generator": best.node,
        },
        "best_note": None if best is not None else "no trial met the outcome constraints (S3-S5)",
        "seconds_per_trial": {
            "generate_mean": sum(gen) / len(gen) if gen else None,
            "evaluate_mean": sum(ev) / len(ev) if ev else None,
            "total_mean": (sum(gen) + sum(ev)) / len(recs) if recs else None,
        },
        "wall_seconds_this_session": wall,
    }


def _write_outputs(
    loop: AxLoop,
    problem: UtilityProblem,
    out: Path,
    summary: Mapping[str, Any],
    extra: Mapping[str, AxLoop] | None = None,
) -> tuple[pl.DataFrame, Path]:
    table = trial_table(loop.records())
    write_text(out / "trials.csv", table.write_csv())
    plot = plot_trials(
        loop,
        out / "trials.png",
        title=f"maximise {loop.objective} subject to " + ", ".join(str(c) for c in loop.constraints),
        extra={k: v.records() for k, v in (extra or {}).items()},
    )
    best = loop.best()
    write_yaml(
        out / "best_weights.yaml",
        {
            "feasible": best is not None,
            "note": summary.get("best_note"),
            "trial": None if best is None else best.index,
            "is_baseline": None if best is None else best.is_baseline,
            # drop-in for conf/utility/*.yaml: `utility.weights`
            "weights": None if best is None else problem.weights_of(best.params),
            "metrics": None if best is None else best.metrics,
            "baseline_weights": problem.weights,
            "baseline_metrics": loop.baseline_values(),
        },
    )
    write_json(out / "summary.json", summary)
    return table, plot


def tune_utility(cfg: DictConfig) -> dict[str, float]:
    """Run the job configured by ``conf/tune_utility.yaml``; returns the f_t of the best (or evaluated) weights."""
    problem = UtilityProblem.from_mapping(OmegaConf.to_container(cfg.utility, resolve=True), "utility")  # type: ignore[arg-type]
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(out, cfg)
    t0 = time.perf_counter()
    evaluator = build_evaluator(cfg, problem)
    log.info(
        "Loaded %d predictions from %s in %.1fs (metric %s)",
        evaluator.n,
        cfg.predictions,
        time.perf_counter() - t0,
        evaluator.metric,
    )
    mode = cfg.get("mode", "tune")
    if mode == "evaluate":
        values = problem.metrics_of(evaluator.evaluate(problem.weights))
        write_json(out / "metrics.json", {"weights": problem.weights, "metrics": values})
        log.info("f_t for %s: %s", problem.weights, {k: round(v, 6) for k, v in values.items()})
        return values
    if mode != "tune":
        raise ValueError(f"mode must be 'tune' or 'evaluate', got {mode!r}")

    quiet_ax()
    wb = _Wandb(cfg, out)

    def to_wandb(loop: AxLoop, r: TrialRecord) -> None:
        if wb.run is None:
            return
        best = loop.best()
        wb.log(
            {
                "trial": r.index,
                "feasible": float(bool(r.feasible)),
                **r.metrics,
                **r.params,
                "best/" + loop.objective: best.metrics[loop.objective] if best else float("nan"),
            }
        )

    gen = GenerationConfig.from_mapping(OmegaConf.to_container(cfg.generation, resolve=True))  # type: ignore[arg-type]
    state = Path(cfg.get("state_file") or out / "ax_experiment.json")
    t1 = time.perf_counter()
    loop = run_tuning(problem, evaluator, int(cfg.n_trials), gen, state, bool(cfg.get("resume", True)), "ax", to_wandb)
    summary = _summary(loop, problem, time.perf_counter() - t1)
    extra: dict[str, AxLoop] = {}
    if cfg.get("compare_random", True):
        rgen = GenerationConfig(method="random_search", seed=gen.seed, noiseless=gen.noiseless)
        t2 = time.perf_counter()
        rloop = run_tuning(
            problem,
            evaluator,
            int(cfg.n_trials),
            rgen,
            state.parent / "random_search" / state.name,
            bool(cfg.get("resume", True)),
            "random",
        )
        rsum = _summary(rloop, problem, time.perf_counter() - t2)
        _write_outputs(rloop, problem, state.parent / "random_search", rsum)
        summary["random_search"] = rsum
        extra["random search"] = rloop
    table, plot = _write_outputs(loop, problem, out, summary, extra)
    best = loop.best()
    if best is None:
        log.warning("No trial met the outcome constraints %s", [str(c) for c in loop.constraints])
    else:
        b = loop.baseline_values() or {}
        log.info(
            "Best: trial %d %s=%.6f (baseline %.6f) weights %s",
            best.index,
            loop.objective,
            best.metrics[loop.objective],
            b.get(loop.objective, float("nan")),
            problem.weights_of(best.params),
        )
    wb.finish(table, plot, {"best/" + k: v for k, v in (best.metrics if best else {}).items()})
    return dict(best.metrics) if best else {}
