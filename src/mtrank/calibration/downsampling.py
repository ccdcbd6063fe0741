"""Eq. 3: the correction of a model trained on negatives kept at rate β, per head."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtrank.calibration.config import CalibrationConfig

log = logging.getLogger(__name__)


def check_beta(beta: Any) -> None:
    b = np.asarray(beta.detach().cpu() if isinstance(beta, Tensor) else beta, dtype=np.float64)
    if not np.all((b > 0) & (b <= 1)):
        raise ValueError(f"a downsampling keep rate β must lie in (0, 1], got {b.tolist()}")


def correct(p_s, beta):
    """Eq. 3: ``p = β p_s / (β p_s − p_s + 1)``, elementwise (numpy arrays, tensors or floats).

    ``beta`` broadcasts against ``p_s`` (a scalar, or one β_t per column of a ``[N, T]`` array).
    """
    check_beta(beta)
    if isinstance(p_s, Tensor):
        beta = torch.as_tensor(beta, dtype=p_s.dtype, device=p_s.device)
    else:
        p_s = np.asarray(p_s, dtype=np.float64)
        beta = np.asarray(beta, dtype=np.float64)
    return beta * p_s / (beta * p_s - p_s + 1.0)


def correct_logits(logits: Tensor, beta) -> Tensor:
    """Eq. 3 on the logit scale, where it is a shift: ``logit p = logit p_s + log β`` (no loss of precision)."""
    check_beta(beta)
    beta = torch.as_tensor(beta, dtype=logits.dtype, device=logits.device)
    return logits + torch.log(beta)


def effective_beta(negatives_before: int, negatives_after: int) -> float:
    """β_t = negatives_after / negatives_before: the share of head t's negatives that the downsampling kept."""
    if negatives_before < 0 or negatives_after < 0 or negatives_after > negatives_before:
        raise ValueError(
            f"negative counts before={negatives_before}, after={negatives_after}: expected 0 ≤ after ≤ before"
        )
    return negatives_after / negatives_before if negatives_before else 1.0


def effective_betas(counts: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    """β_t per task from the pipeline's ``metadata["counts"]`` (recomputed from the counts, then cross-checked).

    Raises a ``KeyError`` naming the task when the counts do not cover it.
    """
    per_task = counts.get("per_task") or {}
    out = {}
    for t in tasks:
        if t not in per_task:
            raise KeyError(f"metadata counts have no per_task entry for task '{t}' (tasks counted: {sorted(per_task)})")
        c = per_task[t]
        b = effective_beta(int(c["negatives_before"]), int(c["negatives_after"]))
        recorded = c.get("effective_beta")
        if recorded is not None and not math.isclose(b, float(recorded), rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(
                f"counts for task '{t}': effective_beta {recorded} ≠ negatives_after/negatives_before = {b}"
            )
        out[t] = b
    return out


def downsampling_from_metadata(metadata: Mapping[str, Any], mode: str = "correct") -> dict[str, Any]:
    """What the model needs about the downsampling: ``{"beta": β, "effective_beta": {task: β_t}, "mode": mode}``.

    ``mode``: ``correct`` (Eq. 3 per head with β_t) or ``reweight`` (unengaged rows weighted 1/β in the loss).
    """
    CalibrationConfig(downsampling=mode)  # a ConfigError naming calibration.downsampling
    counts = metadata.get("counts") or {}
    beta = float(counts.get("beta", metadata.get("beta", 1.0)))
    if not counts.get("per_task"):
        return {"beta": beta, "effective_beta": {t: beta for t in metadata["tasks"]}, "mode": mode}
    return {"beta": beta, "effective_beta": effective_betas(counts, metadata["tasks"]), "mode": mode}


def per_task_betas(beta: float, effective_beta: Mapping[str, float], tasks: Sequence[str]) -> dict[str, float]:
    """A head per task (multi-task): head t learned from the rows kept for task t, so Eq. 3 uses that task's
    effective keep rate (β where none was measured)."""
    return {t: float(effective_beta.get(t, beta)) for t in tasks}


def shared_beta(beta: float, effective_beta: Mapping[str, float], tasks: Sequence[str]) -> dict[str, float]:
    """One head for every task (the binary model): its one label was downsampled at β, so every task uses β."""
    return {t: float(beta) for t in tasks}


# the Eq. 3 keep rate of each task, by the objective's name (``loss.objective``)
BETA_RULES = {"multitask": per_task_betas, "binary": shared_beta}
