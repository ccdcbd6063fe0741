"""The treatment's utility weights for the simulated A/B test: offline BO on logged predictions, the diagnostic arms."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from mtrank.data.simulator_config import SimulatorConfig
from mtrank.data.world import World
from mtrank.online.policies import ModelScorer, Policy
from mtrank.tuning.generation import GenerationConfig
from mtrank.tuning.problem import UtilityProblem
from mtrank.utility.objectives import UtilityEvaluator, read_predictions

log = logging.getLogger(__name__)


def plain_container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def world_of(scorers: Mapping[str, ModelScorer]) -> World:
    """The simulated world every run was trained on (their ``data.simulator`` configs must agree)."""
    configs = {}
    for role, s in scorers.items():
        tc = s.run.train_config
        sim = None if tc is None else OmegaConf.select(tc, "data.simulator")
        inputs = None if tc is None else OmegaConf.select(tc, "data.pipeline.inputs")
        if sim is None or inputs:
            raise ValueError(
                f"models.{role} ({s.run.run_dir}) was not trained on the built-in simulator (its config.yaml has no "
                "data.simulator, or data.pipeline.inputs points to other logs): an online simulation needs the "
                "world the model was trained on"
            )
        configs[role] = SimulatorConfig.from_mapping(plain_container(sim))
    first = next(iter(configs.values()))
    for c in configs.values():
        a, b = first.to_dict(), c.to_dict()
        a.pop("n_impressions"), b.pop("n_impressions"), a.pop("n_files"), b.pop("n_files")
        if a != b:
            raise ValueError(f"the runs were trained on different simulated worlds: {configs}")
    return World.build(first)


def offline_evaluator(treatment: ModelScorer, problem: UtilityProblem, metric: str, cache: Path) -> UtilityEvaluator:
    """f_t of Eq. 5 on the treatment run's test-split predictions (the run's ``predictions.parquet``, or scored)."""
    from mtrank.scoring.predict import predict_frame, write_parquet_atomic
    from mtrank.scoring.score import PREDICTIONS_FILE

    path = treatment.run.run_dir / PREDICTIONS_FILE
    if not path.is_file():
        path = cache / "test_predictions.parquet"
        if not path.is_file():
            log.info("Scoring the treatment run's test split for the offline objectives → %s", path)
            write_parquet_atomic(predict_frame(treatment.run, split="test"), path)
    frame = read_predictions(path, problem.tasks, problem.label_tasks)
    return UtilityEvaluator.from_frame(frame, problem.tasks, problem.label_tasks, metric)


def offline_bo_weights(
    ab: Mapping[str, Any], problem: UtilityProblem, treatment: ModelScorer, cache_dir: Path, evaluator: UtilityEvaluator
) -> tuple[dict[str, float], dict[str, Any]]:
    """The offline-BO weights and where they come from (given, a tune_utility file, or tuned here and cached)."""
    cfg = ab["offline_bo"]
    if cfg.get("weights"):
        w = {str(k): float(v) for k, v in dict(cfg["weights"]).items()}
        problem.params(w)  # S1/S2 check, names the tasks
        return w, {"source": "ab.offline_bo.weights"}
    if cfg.get("best_weights_file"):
        p = Path(cfg["best_weights_file"])
        data = yaml.safe_load(p.read_text())
        if not isinstance(data, dict) or not data.get("weights"):
            raise ValueError(
                f"ab.offline_bo.best_weights_file={p}: no `weights` in it (a src/tune_utility.py "
                "best_weights.yaml is expected; it has none when no trial met the constraints)"
            )
        return {str(k): float(v) for k, v in data["weights"].items()}, {"source": str(p)}
    from mtrank.tuning.generation import quiet_ax
    from mtrank.tuning.utility_task import run_tuning

    quiet_ax()
    gen = GenerationConfig.from_mapping(cfg.get("generation"))
    key_src = json.dumps(
        {
            "run": str(treatment.run.ckpt_path),
            "problem": repr(problem),
            "n": int(cfg["n_trials"]),
            "gen": repr(gen),
            "metric": cfg.get("metric", "pr_auc"),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    state = cache_dir / f"offline_bo-{key}" / "ax_experiment.json"
    t0 = time.perf_counter()
    loop = run_tuning(problem, evaluator, int(cfg["n_trials"]), gen, state, resume=True, label="offline")
    overall = loop.best(include_baseline=True)
    best = loop.best(include_baseline=bool(cfg.get("include_baseline", False)))
    info = {
        "source": f"Eq. 5 tuned offline here ({state})",
        "n_trials": int(cfg["n_trials"]),
        "seconds": time.perf_counter() - t0,
        "best_trial": None if best is None else best.index,
        "best_metrics": None if best is None else best.metrics,
        "baseline_metrics": loop.baseline_values(),
        "baseline_is_best_offline": bool(overall is not None and overall.is_baseline),
    }
    if best is None:
        info["note"] = "no offline trial met S3-S5: the hand-picked weights are kept"
        return dict(problem.weights), info
    return problem.weights_of(best.params), info


def diagnostic_policies(
    cfg: Mapping[str, Any], problem: UtilityProblem, scorers: Mapping[str, ModelScorer]
) -> list[Policy]:
    """Extra Table 1 arms that tell model quality from the choice of weights: the multi-task model with weights
    proportional to the binary model's importance weights (the same business value), and the world's true
    probabilities with the hand-picked weights (the best any model could do with those weights)."""
    out = []
    tc = scorers["control"].run.train_config
    iw = None if tc is None else OmegaConf.select(tc, "loss.importance_weights")
    if iw is not None and scorers["control"].objective == "binary":
        iw = {str(k): float(v) for k, v in plain_container(iw).items() if str(k) in problem.tasks}
        if iw and sum(iw.values()) > 0:
            scale = problem.total / sum(iw.values())
            w = {t: iw.get(t, 0.0) * scale for t in problem.tasks}
            out.append(
                Policy(
                    "treatment_iw",
                    "treatment",
                    w,
                    label=f"multi-task, weights ∝ the binary model's importance weights ({format_weights(w)})",
                )
            )
    if cfg.get("oracle", True):
        out.append(
            Policy(
                "oracle_hand_picked",
                "oracle",
                dict(problem.weights),
                label="true probabilities, hand-picked weights (oracle)",
            )
        )
    return out


def format_weights(w: Mapping[str, float] | None) -> str:
    return "binary score" if w is None else ", ".join(f"{t}={float(v):.3f}" for t, v in w.items())
