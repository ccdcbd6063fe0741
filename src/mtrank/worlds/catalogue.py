"""The entities of a real log a fitted world draws requests from: request contexts, users' histories, the item
catalogue with its popularity, and the retrieval rule (pure numpy, seeded by the caller's generator).

* **Contexts**: every impression of the log is a possible request context (its user, time and the
  ``source.context`` columns); a request draws one uniformly, so users come in proportion to their activity in
  the log and times of day, tabs etc. as they were.
* **Catalogue**: every item of the log, with its ``source.item_columns`` (the item's first value in the log) and
  its popularity (impressions in the log).
* **Retrieval** (:meth:`Catalogue.retrieve`): each of the K candidates is, independently, with probability
  ``history_fraction`` an item from the user's own impressions in the log (uniform over them), else an item drawn
  ∝ its popularity; a request never holds an item twice (duplicates are redrawn). Candidates are ordered by
  ``retrieval_score = log1p(popularity) + retrieval_noise · N(0, 1)``, decreasing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mtrank.data.errors import DataValidationError

__all__ = ["Catalogue", "distinct_first_k"]


def distinct_first_k(proposals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``k`` distinct values of ``proposals`` in their order, and a mask of the rows that have
    ``k`` distinct values (the other rows of the result are meaningless)."""
    r, m = proposals.shape
    order = np.argsort(proposals, axis=1, kind="stable")
    srt = np.take_along_axis(proposals, order, axis=1)
    first_sorted = np.ones((r, m), dtype=bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    keep = first & (np.cumsum(first, axis=1) <= k)
    ok = keep.sum(axis=1) == k
    out = np.zeros((r, k), dtype=proposals.dtype)
    out[ok] = proposals[ok][keep[ok]].reshape(-1, k)
    return out, ok


@dataclass
class Catalogue:
    contexts: pl.DataFrame  # one row per real impression: user, time, context columns
    context_user: np.ndarray  # [N] user index (into hist_ptr) of each context
    items: np.ndarray  # [V] item ids
    item_table: pl.DataFrame  # item id + item columns, row v = items[v]
    popularity: np.ndarray  # [V] impressions of each item in the log
    hist_ptr: np.ndarray  # [U + 1] CSR offsets of the users' distinct items
    hist_items: np.ndarray  # item indices (into items)

    @classmethod
    def from_log(
        cls, log: pl.DataFrame, user: str, item: str, time: str, context: tuple[str, ...], item_columns: tuple[str, ...]
    ) -> Catalogue:
        """Build from a real log (``source`` in the world config names the columns)."""
        need = [user, item, time, *context, *item_columns]
        missing = [c for c in need if c not in log.columns]
        if missing:
            raise DataValidationError(
                f"the world's source log lacks column(s) {missing} named in world.source; it has {log.columns}"
            )
        if log.height == 0:
            raise DataValidationError("the world's source log is empty")
        log = log.select(need)
        for c in (user, item, time):
            if log.get_column(c).null_count():
                raise DataValidationError(f"column {c} of the world's source log has null values")
        items_tbl = log.group_by(item, maintain_order=True).agg(
            [pl.len().alias("__pop")] + [pl.col(c).first() for c in item_columns]
        )
        items_tbl = items_tbl.sort(item)
        items = items_tbl.get_column(item).to_numpy()
        item_index = pl.DataFrame({item: items, "__iidx": np.arange(len(items), dtype=np.int64)})
        users = np.unique(log.get_column(user).to_numpy())
        user_index = pl.DataFrame({user: users, "__uidx": np.arange(len(users), dtype=np.int64)})
        pairs = (
            log.select(user, item).unique().join(user_index, on=user).join(item_index, on=item).sort("__uidx", "__iidx")
        )
        counts = np.bincount(pairs.get_column("__uidx").to_numpy(), minlength=len(users))
        ptr = np.zeros(len(users) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum(counts)
        contexts = log.select(user, time, *context).join(user_index, on=user, how="left", maintain_order="left")
        return cls(
            contexts=contexts.drop("__uidx"),
            context_user=contexts.get_column("__uidx").to_numpy(),
            items=items,
            item_table=items_tbl.drop("__pop"),
            popularity=items_tbl.get_column("__pop").to_numpy().astype(np.int64),
            hist_ptr=ptr,
            hist_items=pairs.get_column("__iidx").to_numpy(),
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    def retrieve(
        self, ctx: np.ndarray, k: int, history_fraction: float, retrieval_noise: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """K distinct candidate item indices per context (retrieval order) and their retrieval scores."""
        if k > self.n_items:
            raise ValueError(f"a request needs {k} distinct items but the catalogue holds {self.n_items}")
        r = len(ctx)
        cum = np.cumsum(self.popularity, dtype=np.float64)
        cum /= cum[-1]
        users = self.context_user[ctx]
        out = np.zeros((r, k), dtype=np.int64)
        todo = np.arange(r)
        m = 3 * k
        while todo.size:
            n = todo.size
            lo, size = self.hist_ptr[users[todo]], np.diff(self.hist_ptr)[users[todo]]
            # a user whose history holds fewer than K items cannot fill a request from it: after a few rounds
            # the last rows are drawn by popularity alone
            from_hist = rng.random((n, m)) < (history_fraction if m <= 24 * k else 0.0)
            hist_pick = self.hist_items[lo[:, None] + np.floor(rng.random((n, m)) * size[:, None]).astype(np.int64)]
            pop_pick = np.minimum(np.searchsorted(cum, rng.random((n, m)), side="right"), self.n_items - 1)
            cand, ok = distinct_first_k(np.where(from_hist, hist_pick, pop_pick), k)
            out[todo[ok]] = cand[ok]
            todo = todo[~ok]
            m *= 2
        score = np.log1p(self.popularity[out]) + retrieval_noise * rng.standard_normal((r, k))
        order = np.argsort(-score, axis=1, kind="stable")
        return np.take_along_axis(out, order, axis=1), np.take_along_axis(score, order, axis=1)
