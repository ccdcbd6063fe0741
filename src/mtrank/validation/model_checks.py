"""Checks of the loss, model, optimiser and data stream of a training config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omegaconf import DictConfig

from mtrank.validation.errors import Problems, fmt_list
from mtrank.validation.lookup import UNRESOLVED, check_one_of, check_task_map, config_value, is_number


def check_loss(cfg: DictConfig, p: Problems, tasks: Sequence[str]) -> str:
    from mtrank.training.objectives import OBJECTIVES

    objective = config_value(cfg, "loss.objective", p, default="multitask")
    if not check_one_of(p, "loss.objective", objective, OBJECTIVES):
        return "multitask"
    _LOSS_CHECKS[str(objective)](cfg, p, tasks)
    return str(objective)


def _check_multitask_loss(cfg: DictConfig, p: Problems, tasks: Sequence[str]) -> None:
    """``loss.objective = multitask``: ``task_weighting``, ``task_weights``, ``uncertainty_variant``, ``pos_weight``."""
    from mtrank.training.losses import TASK_WEIGHTING_KINDS, UNCERTAINTY_VARIANTS

    weighting = config_value(cfg, "loss.task_weighting", p, default="equal")
    ok = check_one_of(
        p,
        "loss.task_weighting",
        str(weighting).lower() if isinstance(weighting, str) else weighting,
        TASK_WEIGHTING_KINDS,
    )
    weights = config_value(cfg, "loss.task_weights", p)
    if ok and str(weighting).lower() == "fixed":
        if weights is None:
            p.add(
                "loss.task_weights",
                f"loss.task_weighting = fixed needs loss.task_weights: one weight per task in {fmt_list(tasks)}",
            )
        check_task_map(p, "loss.task_weights", weights, tasks, exact=True)
    elif ok and weights is not None and weights is not UNRESOLVED:
        p.add(
            "loss.task_weights",
            f"loss.task_weights is set but loss.task_weighting = {weighting} ignores it; "
            "set loss.task_weighting=fixed to use these weights, or loss.task_weights=null",
        )
    if ok and str(weighting).lower() == "uncertainty":
        check_one_of(
            p,
            "loss.uncertainty_variant",
            config_value(cfg, "loss.uncertainty_variant", p, default="kendall"),
            UNCERTAINTY_VARIANTS,
        )
    check_task_map(p, "loss.pos_weight", config_value(cfg, "loss.pos_weight", p), tasks, exact=False, positive=True)


def _check_binary_loss(cfg: DictConfig, p: Problems, tasks: Sequence[str]) -> None:
    """``loss.objective = binary``: ``importance_weights``, ``rule``."""
    from mtrank.training.losses import IMPORTANCE_RULES

    iw = config_value(cfg, "loss.importance_weights", p)
    if iw is None:
        p.add(
            "loss.importance_weights",
            f"loss.objective = binary needs loss.importance_weights: one weight per task in {fmt_list(tasks)}",
        )
    check_task_map(p, "loss.importance_weights", iw, tasks, exact=True, positive=True)
    check_one_of(p, "loss.rule", config_value(cfg, "loss.rule", p, default="max"), IMPORTANCE_RULES)


# the checks of each objective's own keys, by loss.objective (mtrank.training.objectives.OBJECTIVES)
_LOSS_CHECKS = {"multitask": _check_multitask_loss, "binary": _check_binary_loss}


def check_model(cfg: DictConfig, p: Problems, tasks: Sequence[str], objective: str) -> None:
    from mtrank.training.objectives import objective_class

    key = "model.net.head_bias_init"
    init = config_value(cfg, key, p)
    if init is None or init is UNRESOLVED or is_number(init):
        return
    kind = objective_class(objective)
    heads = kind.heads_for(tasks)
    if not isinstance(init, Mapping):
        p.add(
            key,
            f"{key} = {init!r}: expected a number (every head) or a mapping {{head: bias}} over the heads "
            f"{fmt_list(heads)}",
        )
        return
    for k, v in init.items():
        if str(k) not in heads:
            why, hint = kind.heads_text, kind.bias_hint.format(key=key)
            p.add(
                f"{key}.{k}",
                f"{key}.{k}: '{k}' is not a head of this model ({why}); allowed keys: {fmt_list(heads)}; {hint}",
            )
        elif not is_number(v):
            p.add(f"{key}.{k}", f"{key}.{k} = {v!r}: expected a finite number")


def check_optimizer(cfg: DictConfig, p: Problems) -> None:
    """``model.optimizer.lr`` must be a positive finite number: 0 trains nothing (the run ends with the initial
    weights and no word), a negative rate climbs the loss."""
    key = "model.optimizer.lr"
    if config_value(cfg, "model.optimizer", p) in (None, UNRESOLVED):
        return
    lr = config_value(cfg, key, p)
    if lr is None or lr is UNRESOLVED:
        return
    if not is_number(lr) or float(lr) <= 0:
        p.add(
            key,
            f"{key} = {lr!r}: expected a positive finite learning rate (e.g. 0.002); 0 would leave the model "
            "untrained and a negative rate would climb the loss",
        )


def check_stream(cfg: DictConfig, p: Problems) -> None:
    """``data.shuffle_buffer``: an integer ≥ 1 (rows permuted together when training)."""
    key = "data.shuffle_buffer"
    v = config_value(cfg, key, p)
    if v is None or v is UNRESOLVED:
        return
    if not is_number(v) or not float(v).is_integer() or v < 1:
        p.add(
            key,
            f"{key} = {v!r}: expected an integer ≥ 1, the number of train rows permuted together (whole "
            "batches; e.g. 65536); 0 would not shuffle across batches",
        )
