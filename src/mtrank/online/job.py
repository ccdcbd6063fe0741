"""The job behind ``src/simulate_ab.py``: Table 1, offline vs online Bayesian optimisation, on simulated traffic.

1. **Models**: the control (binary, Eq. 1) and treatment (multi-task, Eq. 2) runs — given run folders, or
   trained once with ``src/train.py experiment=binary|multitask`` and cached (:mod:`mtrank.online.runs`). The
   world is the one both were trained on (their ``data.simulator`` config).
2. **Table 1**: control = binary model's score, treatment = multi-task model with the hand-picked utility
   weights of ``utility.weights``; lifts per type with 95 % intervals.
3. **Offline BO weights**: given (``ab.offline_bo.weights`` / ``best_weights_file``), or Eq. 5 solved here with
   :func:`mtrank.tuning.utility_task.run_tuning` on the treatment run's test-split predictions (logged
   impressions, as the post did), its Ax state cached so a rerun does not tune again.
4. **Online BO** (:mod:`mtrank.online.online_bo`): rounds of experiments with the hand-picked control arm.
5. **Final comparison** on fresh traffic: hand-picked, offline-BO and online-BO weights (and the binary model).

Run-folder outputs: ``report.md`` (everything below, in one file), ``table1.md``/``table1.png``,
``online_bo.md``/``online_bo.png``/``online_bo/ax_experiment.json``, ``comparison.md``/``comparison.png``,
``results.json`` (every figure, the configuration, timings).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.data.world_api import RankingWorld
from mtrank.online.experiment import ExperimentResult, TrafficConfig, run_experiment
from mtrank.online.online_bo import (
    CONTROL_ARM,
    OnlineBOConfig,
    OnlineBOResult,
    run_online_bo,
)
from mtrank.online.policies import ModelScorer, Policy, WorldScorer
from mtrank.online.report import (
    comparison_markdown,
    direction_sentence,
    lifts_markdown,
    online_bo_markdown,
    plot_lifts,
    plot_online_bo,
    table1_markdown,
)
from mtrank.online.runs import resolve_run
from mtrank.online.weights import (
    diagnostic_policies,
    format_weights,
    offline_bo_weights,
    offline_evaluator,
    plain_container,
    world_of,
)
from mtrank.online.world_setup import check_trained_on, fitted_setup
from mtrank.tuning.generation import GenerationConfig
from mtrank.tuning.problem import UtilityProblem
from mtrank.tuning.report import write_json, write_text
from mtrank.utility.objectives import UtilityEvaluator

log = logging.getLogger(__name__)


@dataclass
class _Simulation:
    """What the steps of one simulation share: settings, the models and their world, and what it has written."""

    out: Path
    ab: dict[str, Any]
    seed: int
    level: float
    types: list[str]
    problem: UtilityProblem
    cache: Path
    runs: dict[str, Path]
    scorers: dict[str, ModelScorer]
    world: RankingWorld
    k: int
    chunk: int
    score_position: int | None
    hand: Policy  # the multi-task model with the hand-picked weights: the control arm of BO and the final comparison
    binary: Policy  # the binary model's score
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)

    def traffic(self, n: int) -> TrafficConfig:
        return TrafficConfig(requests_per_arm=int(n), k=self.k, chunk_requests=self.chunk, level=self.level)


def _models_and_world(cfg: DictConfig) -> _Simulation:
    """Step 1: settings, the control and treatment runs (given or trained and cached), their world."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ab = plain_container(cfg.ab)
    mcfg = plain_container(cfg.models)
    seed = int(cfg.seed)
    level = float(cfg.metrics.level)
    types = [str(t) for t in cfg.metrics.types]
    problem = UtilityProblem.from_mapping(plain_container(cfg.utility), "utility")
    timings: dict[str, float] = {}

    t = time.perf_counter()
    cache = Path(mcfg["cache_dir"])
    overrides = [str(o) for o in mcfg.get("train_overrides") or []]
    fitted = fitted_setup(plain_container(cfg.get("world")), mcfg["data_dir"], str(cfg.paths.shared_data_dir))
    if fitted is not None:
        overrides = [*fitted.train_overrides, *overrides]
    runs = {
        "control": resolve_run(
            mcfg.get("control"), mcfg["control_experiment"], overrides, cache, mcfg["data_dir"], "control"
        ),
        "treatment": resolve_run(
            mcfg.get("treatment"), mcfg["treatment_experiment"], overrides, cache, mcfg["data_dir"], "treatment"
        ),
    }
    timings["models"] = time.perf_counter() - t
    score_position = mcfg.get("score_position")
    scorers = {
        role: ModelScorer(path, score_position, int(mcfg.get("batch_size", 65_536))) for role, path in runs.items()
    }
    unknown = [t_ for t_ in problem.tasks if t_ not in scorers["treatment"].tasks]
    if unknown:
        raise ValueError(
            f"utility.weights name task(s) {unknown} that the treatment model ({runs['treatment']}) does "
            f"not predict; it predicts {scorers['treatment'].tasks}"
        )
    if fitted is not None:
        check_trained_on(fitted, scorers)
    world = world_of(scorers) if fitted is None else fitted.world
    k = int(ab["k"])
    chunk = int(ab["chunk_requests"])
    K = world.candidates_per_request
    if k > K:
        raise ValueError(
            f"ab.k={k} exceeds the {K} candidates retrieved per request (data.simulator.candidates_per_request, or "
            "world.requests.candidates_per_request)"
        )
    log.info(
        "Control %s (%s), treatment %s (%s); top-%d of %d candidates shown",
        runs["control"],
        scorers["control"].objective,
        runs["treatment"],
        scorers["treatment"].objective,
        k,
        K,
    )

    hand = Policy(
        CONTROL_ARM,
        "treatment",
        dict(problem.weights),
        label=f"multi-task, hand-picked ({format_weights(problem.weights)})",
    )
    binary = Policy("binary", "control", None, label=f"binary ({scorers['control'].objective}) score")
    results: dict[str, Any] = {
        "models": {r: str(p) for r, p in runs.items()},
        "world": world.describe(),
        "settings": {"k": k, "score_position": score_position, "level": level, "types": types, "seed": seed},
    }
    report: list[str] = [f"# Simulated online A/B tests\n\nRun folder: `{out}`\n"]
    return _Simulation(
        out,
        ab,
        seed,
        level,
        types,
        problem,
        cache,
        runs,
        scorers,
        world,
        k,
        chunk,
        score_position,
        hand,
        binary,
        timings,
        results,
        report,
    )


def _table1(sim: _Simulation) -> None:
    """Step 2: Table 1, the multi-task model with the hand-picked weights against the binary model."""
    ab, problem, out, level = sim.ab, sim.problem, sim.out, sim.level
    t = time.perf_counter()
    ctrl = Policy("control", "control", None, label=sim.binary.label)
    treat = Policy("treatment", "treatment", dict(problem.weights), label=sim.hand.label)
    t1_pols = [ctrl, treat]
    diag = diagnostic_policies(ab["table1"], problem, sim.scorers) if ab["table1"].get("diagnostics", True) else []
    t1_scorers: dict[str, Any] = dict(sim.scorers)
    if any(p.model == "oracle" for p in diag):
        t1_scorers["oracle"] = WorldScorer(sim.world, sim.score_position)
    t1 = run_experiment(
        sim.world,
        t1_pols + diag,
        t1_scorers,
        sim.traffic(ab["table1"]["requests_per_arm"]),
        sim.types,
        sim.seed,
        "table1",
    )
    sim.timings["table1"] = time.perf_counter() - t
    md1 = table1_markdown(t1, "treatment", level)
    sentence = direction_sentence(t1, "treatment")
    labels1 = {p.name: p.describe() for p in t1_pols + diag}
    md_diag = (
        lifts_markdown(
            t1, ["treatment"] + [p.name for p in diag], labels1, ["propensity", "expected_propensity"], level
        )
        if diag
        else ""
    )
    write_text(
        out / "table1.md",
        md1 + "\n" + sentence + "\n" + ("\nDiagnostic arms of the same experiment:\n\n" + md_diag if md_diag else ""),
    )
    plot_lifts(
        t1,
        ["treatment"] + [p.name for p in diag],
        ["propensity", "volume"],
        out / "table1.png",
        title="Table 1: lift vs the binary importance-weighted model",
        labels={
            "treatment": "multi-task, hand-picked",
            "control": "binary",
            "treatment_iw": "multi-task, importance weights",
            "oracle_hand_picked": "oracle, hand-picked",
        },
    )
    sim.results["table1"] = {**t1.to_dict(), "direction": sentence}
    sim.report += ["## Table 1: multi-task vs binary\n", md1, sentence + "\n"]
    if md_diag:
        sim.report += ["Diagnostic arms of the same experiment (lifts vs the binary model):\n", md_diag]
    sim.report += ["![Table 1](table1.png)\n"]
    log.info("Table 1:\n%s\n%s\n%s", md1, sentence, md_diag)


def _offline_bo(sim: _Simulation) -> tuple[UtilityEvaluator, dict[str, float]]:
    """Step 3: the offline objectives f_t (Eq. 5) and the offline-BO weights."""
    t = time.perf_counter()
    treatment = sim.scorers["treatment"]
    evaluator = offline_evaluator(treatment, sim.problem, str(sim.ab["offline_bo"].get("metric", "pr_auc")), sim.cache)
    off_w, off_info = offline_bo_weights(sim.ab, sim.problem, treatment, sim.cache, evaluator)
    sim.timings["offline_bo"] = time.perf_counter() - t
    sim.results["offline_bo"] = {"weights": off_w, **off_info}
    log.info("Offline-BO weights: %s (%s)", format_weights(off_w), off_info["source"])
    return evaluator, off_w


def _online_bo(sim: _Simulation) -> dict[str, float] | None:
    """Step 4: online Bayesian optimisation against the hand-picked control; its weights (None when disabled)."""
    problem, types, obo = sim.problem, sim.types, sim.ab["online_bo"]
    if not obo.get("enabled", True):
        return None
    needed = [problem.objective] + [c.metric[len("f_") :] for c in problem.constraints if c.relative]
    missing = [t_ for t_ in needed if t_ not in types]
    if missing:
        raise ValueError(
            f"online BO needs the metrics of {missing} (objective and constraints of utility); add "
            f"them to metrics.types={types}"
        )
    t = time.perf_counter()
    bcfg = OnlineBOConfig(
        rounds=int(obo["rounds"]),
        arms_per_round=int(obo["arms_per_round"]),
        metric=str(obo["metric"]),
        generation=GenerationConfig.from_mapping(obo.get("generation")),
    )

    def evaluate_round(r: int, arms: Mapping[str, Mapping[str, float]]) -> ExperimentResult:
        pols = [sim.hand] + [Policy(name, "treatment", dict(w)) for name, w in arms.items()]
        return run_experiment(
            sim.world, pols, sim.scorers, sim.traffic(obo["requests_per_arm"]), types, sim.seed, f"online_bo/{r}"
        )

    bo: OnlineBOResult = run_online_bo(problem, evaluate_round, bcfg, sim.out / "online_bo" / "ax_experiment.json")
    on_w = bo.best_weights
    sim.timings["online_bo"] = time.perf_counter() - t
    md_bo = online_bo_markdown(bo.rounds, types, problem.tasks, bcfg.metric)
    write_text(sim.out / "online_bo.md", md_bo)
    plot_online_bo(bo.rounds, types, sim.out / "online_bo.png", bcfg.metric)
    sim.results["online_bo"] = bo.to_dict()
    sim.report += [
        f"## Online Bayesian optimisation ({bcfg.rounds} rounds × {bcfg.arms_per_round} arms + control)\n",
        f"Objective `{bo.objective}`, constraints {', '.join(f'`{c}`' for c in bo.constraints)} "
        f"(lifts in % of {bcfg.metric} against each round's hand-picked control).\n",
        md_bo,
        f"Chosen: {format_weights(on_w)} ({bo.best_source}).\n",
        "![online BO](online_bo.png)\n",
    ]
    return on_w


def _final_comparison(
    sim: _Simulation, evaluator: UtilityEvaluator, off_w: Mapping[str, float], on_w: Mapping[str, float] | None
) -> None:
    """Step 5: hand-picked, offline-BO and online-BO weights (and the binary model) on fresh traffic."""
    ab, problem, out, level = sim.ab, sim.problem, sim.out, sim.level
    t = time.perf_counter()
    final_pols = [sim.hand, Policy("offline_bo", "treatment", off_w, label=f"offline BO ({format_weights(off_w)})")]
    if on_w is not None:
        final_pols.append(Policy("online_bo", "treatment", on_w, label=f"online BO ({format_weights(on_w)})"))
    if ab["final"].get("include_binary", True):
        final_pols.append(sim.binary)
    fin = run_experiment(
        sim.world, final_pols, sim.scorers, sim.traffic(ab["final"]["requests_per_arm"]), sim.types, sim.seed, "final"
    )
    sim.timings["final"] = time.perf_counter() - t
    offline_vals = {p.name: evaluator.evaluate(dict(p.weights)) for p in final_pols if p.weights is not None}
    base_off = offline_vals[CONTROL_ARM]
    rows = []
    sources = {
        CONTROL_ARM: "hand-picked (control)",
        "offline_bo": "offline BO",
        "online_bo": "online BO",
        "binary": "binary model",
    }
    for p in final_pols:
        off = offline_vals.get(p.name)
        rows.append(
            {
                "arm": p.name,
                "source": sources[p.name],
                "weights": dict(p.weights) if p.weights else None,
                "offline": off,
                "offline_lift": None if off is None else {t_: off[t_] / base_off[t_] - 1.0 for t_ in off},
            }
        )
    kind = str(ab["final"].get("metric", "propensity"))
    md_cmp = comparison_markdown(fin, rows, kind, problem.tasks, problem.objective, level)
    md_cmp_vol = comparison_markdown(fin, rows, "volume", problem.tasks, problem.objective, level)
    md_cmp_exp = comparison_markdown(fin, rows, "expected_propensity", problem.tasks, problem.objective, level)
    write_text(
        out / "comparison.md",
        f"{kind}:\n\n{md_cmp}\nvolume:\n\n{md_cmp_vol}\n"
        f"expected propensity (true probabilities of the shown impressions, no label noise):\n\n{md_cmp_exp}",
    )
    plot_lifts(
        fin,
        [p.name for p in final_pols if p.name != CONTROL_ARM],
        ["propensity", "volume"],
        out / "comparison.png",
        title="fresh traffic: lift vs multi-task with hand-picked weights",
        labels={p.name: sources[p.name] for p in final_pols},
    )
    sim.results["final"] = {**fin.to_dict(), "offline": rows}
    sim.report += [
        "## Offline vs online weights on fresh traffic\n",
        f"Lifts against the hand-picked weights; offline f_{problem.objective}: "
        f"{evaluator.metric} on the treatment run's test split (logged impressions).\n",
        f"{kind}:\n",
        md_cmp,
        "volume:\n",
        md_cmp_vol,
        "expected propensity (true probabilities of the shown impressions, no label noise):\n",
        md_cmp_exp,
        "![comparison](comparison.png)\n",
    ]


def _write_outputs(sim: _Simulation, cfg: DictConfig, t_start: float) -> dict[str, Any]:
    """Step 6: timings, the configuration, ``report.md`` and ``results.json``."""
    timings, results, report = sim.timings, sim.results, sim.report
    timings["total"] = time.perf_counter() - t_start
    results["timings_seconds"] = timings
    results["load_average"] = list(os.getloadavg())
    results["config"] = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )
    report.append(
        f"Wall time: {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')}); "
        f"load average at the end {results['load_average'][0]:.1f}.\n"
    )
    write_text(sim.out / "report.md", "\n".join(report))
    write_json(sim.out / "results.json", results)
    log.info("Wrote %s (%.0f s)", sim.out / "report.md", timings["total"])
    return results


def simulate_ab(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured simulation (``conf/simulate_ab.yaml``); returns the figures written to results.json.

    The steps of the module docstring, in order: models and world, Table 1, offline BO, online BO, the final
    comparison on fresh traffic, the outputs.
    """
    t_start = time.perf_counter()
    sim = _models_and_world(cfg)
    _table1(sim)
    evaluator, off_w = _offline_bo(sim)
    on_w = _online_bo(sim)
    _final_comparison(sim, evaluator, off_w, on_w)
    return _write_outputs(sim, cfg, t_start)
