"""The utility score of Eq. 4 and the offline objectives f_t(w) of Eq. 5.

* :func:`utility_scores`: ``u(i) = Σ_t w_t · p_t(i)`` from calibrated predictions (weights may be
  negative, e.g. for hide);
* :func:`rank_within_requests`: the position each impression gets when a request is ranked by ``u``;
* :func:`average_precision`: area under the precision–recall curve of a score against one or more
  labels over all impressions (the post's f_t); sort once, one cumulative sum per label;
* :func:`ndcg_at_k`: per-request NDCG@k averaged over requests, the ranking-metric option (the project's one
  NDCG, :func:`mtrank.metrics.ranking.mean_ndcg`: tied utilities averaged);
* :class:`UtilityEvaluator`: holds the predictions and labels of a predictions Parquet file and returns
  every f_t for a weight vector — the function Ax optimises.

Everything is vectorised numpy: all f_t for a million impressions take a fraction of a second.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtrank.metrics.ranking import mean_ndcg

__all__ = [
    "METRICS",
    "utility_scores",
    "rank_within_requests",
    "average_precision",
    "ndcg_at_k",
    "RequestGroups",
    "UtilityEvaluator",
    "read_predictions",
]

# The objectives f_t a UtilityEvaluator can compute: "pr_auc" (Eq. 5) or "ndcg@<k>" (per request).
METRICS = ("pr_auc", "ndcg@k")


# ----------------------------------------------------------------------------- scores and ranks
def utility_scores(probs: np.ndarray, weights: np.ndarray | Sequence[float]) -> np.ndarray:
    """``u = probs @ weights`` in float64: ``probs`` is ``(n, T)``, ``weights`` is ``(T,)``."""
    p = np.asarray(probs)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2 or w.ndim != 1 or p.shape[1] != w.shape[0]:
        raise ValueError(f"probs must be (n, T) and weights (T,), got {p.shape} and {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    return p.astype(np.float64, copy=False) @ w


def rank_within_requests(request_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """0-based position of each impression when its request is sorted by decreasing score.

    Ties keep the input order. Requests need not be contiguous.
    """
    rid = np.asarray(request_ids)
    s = np.asarray(scores, dtype=np.float64)
    if rid.shape != s.shape or rid.ndim != 1:
        raise ValueError(f"request_ids and scores must be 1-d of the same length, got {rid.shape} and {s.shape}")
    order = np.lexsort((-s, rid))  # by request, then decreasing score; lexsort is stable
    rid_sorted = rid[order]
    starts = np.r_[0, np.flatnonzero(rid_sorted[1:] != rid_sorted[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(rid_sorted)])
    pos_sorted = np.arange(len(rid_sorted)) - np.repeat(starts, lengths)
    ranks = np.empty(len(rid_sorted), dtype=np.int64)
    ranks[order] = pos_sorted
    return ranks


# ----------------------------------------------------------------------------- PR-AUC
def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray | float:
    """Area under the precision–recall curve of ``scores`` against binary ``labels`` (``(n,)`` or ``(n, T)``).

    ``AP = Σ_k (R_k − R_{k−1}) · P_k`` over the distinct score thresholds in decreasing order, tied
    scores forming one threshold: the definition of ``sklearn.metrics.average_precision_score`` and
    torchmetrics' ``binary_average_precision``. A label with no positive gives ``nan``.
    Returns a float for 1-d labels, an array of ``T`` floats otherwise.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    one = y.ndim == 1
    if one:
        y = y[:, None]
    if s.ndim != 1 or y.ndim != 2 or y.shape[0] != s.shape[0]:
        raise ValueError(f"scores must be (n,) and labels (n,) or (n, T), got {s.shape} and {np.shape(labels)}")
    ap = _average_precision(s, [np.flatnonzero(y[:, j]) for j in range(y.shape[1])])
    return float(ap[0]) if one else ap


def _average_precision(s: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """AP of ``s`` for each label given as the row indices of its positives.

    Only positives add to AP: a positive in the block of tied scores ending at 0-based position ``e`` of
    the descending order adds ``precision = tp(e) / (e + 1)``, ``tp(e)`` counting the positives up to ``e``.
    One sort of the scores serves every label; the rest costs ``O(positives · log positives)``.
    """
    n = len(s)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(-s)  # ties are resolved below, so an unstable sort is fine
    s_sorted = s[order]
    is_last = np.empty(n, dtype=bool)
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=is_last[:-1])
    is_last[-1:] = True
    pos_of_row = np.empty(n, dtype=np.int64)
    pos_of_row[order] = np.arange(n)
    if is_last.all():  # no ties: each position is its own threshold
        block_end = None
    else:
        idx = np.where(is_last, np.arange(n), n)
        block_end = np.minimum.accumulate(idx[::-1])[::-1]
    out = np.full(len(positives), np.nan)
    for j, rows in enumerate(positives):
        if len(rows) == 0:
            continue
        pos = np.sort(pos_of_row[rows])
        end = pos if block_end is None else block_end[pos]
        tp = np.searchsorted(pos, end, side="right")
        out[j] = float(np.mean(tp / (end + 1.0)))
    return out


# ----------------------------------------------------------------------------- NDCG@k per request
@dataclass(frozen=True)
class RequestGroups:
    """Dense request index of each impression, computed once so per-request metrics stay cheap."""

    index: np.ndarray  # (n,) int64 in [0, n_groups)
    n_groups: int

    @classmethod
    def from_ids(cls, request_ids: np.ndarray) -> RequestGroups:
        uniq, inv = np.unique(np.asarray(request_ids), return_inverse=True)
        return cls(index=inv.astype(np.int64).reshape(-1), n_groups=len(uniq))


def ndcg_at_k(
    request_ids: np.ndarray | RequestGroups, scores: np.ndarray, labels: np.ndarray, k: int
) -> np.ndarray | float:
    """Mean over requests of NDCG@k (binary gains, ``1/log2(rank+2)`` discounts) for each label column.

    Requests with no positive for a label are left out of that label's mean (``nan`` if none has one).
    Tied scores within a request share their ranks' mean discount (:mod:`mtrank.metrics.ranking`).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    groups = request_ids if isinstance(request_ids, RequestGroups) else RequestGroups.from_ids(request_ids)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    one = y.ndim == 1
    if one:
        y = y[:, None]
    g = groups.index
    if s.shape != g.shape or y.shape[0] != g.shape[0]:
        raise ValueError(
            f"request ids, scores and labels must have the same length, got {g.shape}, {s.shape}, {y.shape}"
        )
    out = mean_ndcg(groups.index, groups.n_groups, s, [np.flatnonzero(y[:, j]) for j in range(y.shape[1])], k)
    return float(out[0]) if one else out


# ----------------------------------------------------------------------------- predictions file
def metric_k(metric: str) -> int | None:
    if metric == "pr_auc":
        return None
    if metric.startswith("ndcg@"):
        try:
            k = int(metric.split("@", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return k
    raise ValueError(f"unknown utility metric {metric!r}; expected 'pr_auc' or 'ndcg@<k>' (e.g. 'ndcg@10')")


def read_predictions(
    path: str | os.PathLike,
    weight_tasks: Sequence[str],
    label_tasks: Sequence[str],
    prob_prefix: str = "p_",
    label_prefix: str = "label_",
) -> pl.DataFrame:
    """Read the columns the utility needs from a predictions Parquet file, with errors that name them.

    Needs ``request_id``, ``<prob_prefix><task>`` for each weighted task and ``<label_prefix><task>`` for
    each label task (the contract of ``mtrank.scoring.score``: ``p_<task>`` calibrated, ``label_<task>``).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"predictions={p}: no such file (a Parquet file of predictions is expected)")
    schema = pl.read_parquet_schema(p) if p.is_file() else pl.scan_parquet(p).collect_schema()
    wanted = ["request_id"] + [f"{prob_prefix}{t}" for t in weight_tasks] + [f"{label_prefix}{t}" for t in label_tasks]
    missing = [c for c in dict.fromkeys(wanted) if c not in schema]
    if missing:
        raise KeyError(
            f"predictions={p}: missing column(s) {missing}; expected request_id, {prob_prefix}<task> for the "
            f"weighted tasks {list(weight_tasks)} and {label_prefix}<task> for {list(label_tasks)}; "
            f"found {list(schema)}"
        )
    frame = pl.read_parquet(p, columns=list(dict.fromkeys(wanted)))
    for t in weight_tasks:
        c = f"{prob_prefix}{t}"
        if frame[c].null_count() or not frame[c].dtype.is_float():
            raise ValueError(
                f"predictions={p}: column {c} must be a float column without nulls, got {frame[c].dtype} "
                f"with {frame[c].null_count()} null(s)"
            )
    for t in label_tasks:
        c = f"{label_prefix}{t}"
        bad = frame.filter(~pl.col(c).is_in([0, 1]) | pl.col(c).is_null()).height
        if bad:
            raise ValueError(f"predictions={p}: column {c} must hold 0/1 labels, found {bad} other value(s)")
    return frame


class UtilityEvaluator:
    """Every f_t(w) of Eq. 5 for one set of predictions: ``evaluator.evaluate({"save": 0.2, ...})``.

    ``probs`` maps each weighted task to its calibrated predictions, ``labels`` each label task to its
    0/1 labels; ``metric`` is ``"pr_auc"`` (over all impressions) or ``"ndcg@<k>"`` (mean over requests,
    which needs ``request_ids``).
    """

    def __init__(
        self,
        probs: Mapping[str, np.ndarray],
        labels: Mapping[str, np.ndarray],
        request_ids: np.ndarray | None = None,
        metric: str = "pr_auc",
    ) -> None:
        if not probs:
            raise ValueError("probs is empty: at least one weighted task is needed")
        if not labels:
            raise ValueError("labels is empty: at least one label task is needed")
        self.weight_tasks = tuple(probs)
        self.label_tasks = tuple(labels)
        self.metric = metric
        self._k = metric_k(metric)
        n = {len(np.asarray(v)) for v in [*probs.values(), *labels.values()]}
        if len(n) != 1:
            raise ValueError(f"probs and labels must have the same length, got lengths {sorted(n)}")
        self.n = n.pop()
        self._p = np.column_stack([np.asarray(probs[t], dtype=np.float64) for t in self.weight_tasks])
        self._positives = [np.flatnonzero(np.asarray(labels[t]) != 0) for t in self.label_tasks]
        self._groups: RequestGroups | None = None
        if request_ids is not None:
            if len(request_ids) != self.n:
                raise ValueError(f"request_ids has {len(request_ids)} rows, predictions have {self.n}")
            self._groups = RequestGroups.from_ids(np.asarray(request_ids))
        if self._k is not None and self._groups is None:
            raise ValueError(f"metric={metric} is per request: request_ids are needed")

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        weight_tasks: Sequence[str],
        label_tasks: Sequence[str],
        metric: str = "pr_auc",
        prob_prefix: str = "p_",
        label_prefix: str = "label_",
    ) -> UtilityEvaluator:
        missing = [
            c
            for c in [f"{prob_prefix}{t}" for t in weight_tasks] + [f"{label_prefix}{t}" for t in label_tasks]
            if c not in frame.columns
        ]
        if missing:
            raise KeyError(f"predictions frame lacks column(s) {missing}; has {frame.columns}")
        rid = frame["request_id"].to_numpy() if "request_id" in frame.columns else None
        return cls(
            probs={t: frame[f"{prob_prefix}{t}"].to_numpy() for t in weight_tasks},
            labels={t: frame[f"{label_prefix}{t}"].to_numpy() for t in label_tasks},
            request_ids=rid,
            metric=metric,
        )

    @classmethod
    def from_parquet(
        cls,
        path: str | os.PathLike,
        weight_tasks: Sequence[str],
        label_tasks: Sequence[str],
        metric: str = "pr_auc",
        prob_prefix: str = "p_",
        label_prefix: str = "label_",
    ) -> UtilityEvaluator:
        frame = read_predictions(path, weight_tasks, label_tasks, prob_prefix, label_prefix)
        return cls.from_frame(frame, weight_tasks, label_tasks, metric, prob_prefix, label_prefix)

    def weight_vector(self, weights: Mapping[str, float]) -> np.ndarray:
        unknown = sorted(set(weights) - set(self.weight_tasks))
        missing = [t for t in self.weight_tasks if t not in weights]
        if unknown or missing:
            raise KeyError(
                f"weights must name exactly the tasks {list(self.weight_tasks)}; missing {missing}, unknown {unknown}"
            )
        return np.array([float(weights[t]) for t in self.weight_tasks])

    def scores(self, weights: Mapping[str, float]) -> np.ndarray:
        """The utility ``u`` of every impression."""
        return utility_scores(self._p, self.weight_vector(weights))

    def ranks(self, weights: Mapping[str, float]) -> np.ndarray:
        """Position of each impression within its request when ranked by ``u``."""
        if self._groups is None:
            raise ValueError("request_ids are needed to rank within requests")
        return rank_within_requests(self._groups.index, self.scores(weights))

    def evaluate(self, weights: Mapping[str, float]) -> dict[str, float]:
        """``{task: f_task(w)}`` for every label task."""
        u = self.scores(weights)
        if self._k is None:
            vals = _average_precision(u, self._positives)
        else:
            groups = self._groups
            vals = mean_ndcg(groups.index, groups.n_groups, u, self._positives, self._k)  # type: ignore[union-attr]
        return {t: float(v) for t, v in zip(self.label_tasks, vals)}
