"""How close to ``oracle_auroc`` can a model on the default features get? Two reference scores per task.

The oracle scores an impression with its true probability, which uses the exact per-user, per-query and
per-product latents. The default features (conf/data/simulated.yaml) see those only through the user's
segment, the categories, the retrieval score, the candidate's popularity and the user's activity count.
This script prints, on a fresh sample of impressions of the default world:

* ``oracle``: AUROC of the true probability;
* ``features``: AUROC of a *plug-in* score that uses the simulator's engagement model (equations in
  :mod:`mtrank.data.simulator`) on what the features reveal: affinity from the segment's taste and the
  candidate category's centre (no per-id noise), relevance = ``retrieval_score``, quality =
  E[quality | popularity], log activity = E[log activity | activity count]. Not the best possible
  features-only score (that would integrate over the hidden noise), but a simple one: a model on the
  default features should get about this far;
* ``downsampled``: AUROC of the best ranking a model can learn from the *downsampled* training rows
  (Eq. 3's note: negatives of head t include rows with other engagements, kept whole), with the true
  probabilities: ``p_t / (β·p_none + (1 − p_t − p_none))``. Its loss against the oracle is what
  ``calibration.downsampling=reweight`` (1/β weights on the sampled rows) would win back, at most.

    python scripts/oracle_floor.py                    # 1M impressions, β = 0.1, the six tasks
    python scripts/oracle_floor.py --tasks save click long_click closeup
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torchmetrics.functional.classification import binary_auroc

from mtrank.data.simulator_config import TASK_WEIGHTS, TASKS, SimulatorConfig
from mtrank.data.world import World

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("aff", "rel", "pos", "lp", "g", "act")  # the order of TASK_WEIGHTS' columns


def _binned_mean(target: np.ndarray, key: np.ndarray, cap: int) -> np.ndarray:
    """E[target | min(key, cap)] as a lookup table indexed by the capped key."""
    k = np.minimum(key, cap)
    sums = np.bincount(k, weights=target, minlength=cap + 1)
    counts = np.bincount(k, minlength=cap + 1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), target.mean())


def plug_in_probabilities(world: World, frame) -> dict[str, np.ndarray]:
    """The engagement model's marginals computed from what the default features reveal."""
    cfg = world.cfg
    u = frame["user_id"].to_numpy()
    c = frame["candidate_id"].to_numpy()
    pos = frame["position"].to_numpy().astype(np.float64)
    g_of_pop = _binned_mean(world.product_quality, world.product_popularity, 400)
    act_of_cnt = _binned_mean(np.log(world.user_activity_level), world.user_activity, 100)
    x = {
        "aff": np.einsum(
            "nd,nd->n", world.segment_taste[world.user_segment[u]], world.category_centres[world.product_category[c]]
        ),
        "rel": frame["retrieval_score"].to_numpy(),
        "pos": -cfg.position_bias * np.log1p(pos),
        "lp": np.log(world.product_price[c]) - 3.0,
        "g": g_of_pop[np.minimum(world.product_popularity[c], 400)],
        "act": act_of_cnt[np.minimum(world.user_activity[u], 100)],
    }
    cond = {}
    for t in TASKS:
        z = cfg.base_logits[t] + sum(w * x[f] for w, f in zip(TASK_WEIGHTS[t], FEATURES))
        cond[t] = 1.0 / (1.0 + np.exp(-z))
    shown = 1.0 - cond["hide"]
    return {
        "save": shown * cond["save"],
        "click": shown * cond["click"],
        "long_click": shown * cond["click"] * cond["long_click"],
        "closeup": shown * cond["closeup"],
        "hide": cond["hide"],
        "checkout": shown * cond["click"] * cond["checkout"],
    }


def p_no_engagement(world: World, frame, tasks: list[str]) -> np.ndarray:
    """P(no label of any of ``tasks``) per row: the rows that negative downsampling samples."""
    c = world.conditional_probabilities(frame)
    shown = 1.0 - c["hide"]
    none_shown = np.ones_like(shown)  # given not hidden: closeup, save, click drawn independently
    for t in ("closeup", "save"):
        if t in tasks:
            none_shown = none_shown * (1.0 - c[t])
    if "click" in tasks:
        click_counts = np.ones_like(shown)
    else:  # a click only counts through its long click / checkout (independent given the click)
        not_derived = np.ones_like(shown)
        for t in ("long_click", "checkout"):
            if t in tasks:
                not_derived = not_derived * (1.0 - c[t])
        click_counts = 1.0 - not_derived
    none_shown = none_shown * (1.0 - c["click"] * click_counts)
    return shown * none_shown + (0.0 if "hide" in tasks else c["hide"])


def auroc(score: np.ndarray, y: np.ndarray) -> float:
    return float(binary_auroc(torch.from_numpy(score.astype(np.float64)), torch.from_numpy(y.astype(np.int64))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impressions", type=int, default=1_000_000, help="size of the fresh sample")
    p.add_argument("--beta", type=float, default=None, help="keep rate of unengaged rows (default: the data config's)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--sample-seed", type=int, default=123)
    args = p.parse_args(argv)

    data = OmegaConf.load(ROOT / "conf" / "data" / "simulated.yaml")
    beta = float(args.beta if args.beta is not None else data.pipeline.downsample.beta)
    cfg = SimulatorConfig.from_mapping(OmegaConf.to_container(data.simulator))
    world = World.build(cfg)
    rng = np.random.default_rng(args.sample_seed)
    frame = world.draw_labels(world.sample_requests(args.impressions // cfg.candidates_per_request, rng), rng)
    truth = world.true_probabilities(frame)
    plug = plug_in_probabilities(world, frame)
    none = p_no_engagement(world, frame, args.tasks)

    print(f"{frame.height} impressions of the default world, β = {beta}, tasks {args.tasks}")
    print(f"{'task':<11} {'rate':>7} {'oracle':>7} {'features':>9} {'gap':>7} {'downsampled':>12} {'gap':>7}")
    for t in args.tasks:
        y = frame[t].to_numpy()
        o = auroc(truth[t], y)
        f = auroc(plug[t], y)
        other = np.clip(1.0 - truth[t] - none, 0.0, None)
        d = auroc(truth[t] / (beta * none + other), y)
        print(f"{t:<11} {y.mean():7.4f} {o:7.4f} {f:9.4f} {o - f:+7.4f} {d:12.4f} {o - d:+7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
