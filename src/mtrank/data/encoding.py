"""Feature encoding fitted on the train split only.

* categorical: a vocabulary per column; index 0 is the out-of-vocabulary bucket (values unseen in train,
  seen fewer than ``min_count`` times, beyond ``max_vocab``, or null), then values by descending train count.
* numeric: z-score with the train mean and standard deviation; ``log_numeric`` columns (counts) are first
  mapped by sign(x)·log1p(|x|). Null/NaN values are filled with the train mean (0 after normalisation) under
  ``nan_policy=fill_mean``, and counted; ``nan_policy=error`` refuses them earlier, in validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from mtrank.data.spec import CAT_PREFIX, NUM_PREFIX

OOV_INDEX = 0
_STATS_BYTES = 256 * 2**20  # numeric train columns held at once while computing their statistics


def _pre(col: str, log: bool) -> pl.Expr:
    x = pl.col(col).cast(pl.Float64)
    x = pl.when(x.is_nan()).then(None).otherwise(x)
    if log:
        x = x.sign() * x.abs().log1p()
    return x


@dataclass
class FeatureEncoder:
    categorical: list[str]
    numeric: list[str]
    log_numeric: list[str]
    vocabularies: dict[str, pl.DataFrame] = field(default_factory=dict)  # columns: value, index, count
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # mean, std per numeric column
    dtypes: dict[str, str] = field(default_factory=dict)  # categorical raw dtype: Int64 | String
    # per numeric column, of the train values after the log1p transform (before z-scoring): min, max and the
    # median absolute deviation; min / max are saved, so that scoring can compare new values with them
    spread: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def numeric_all(self) -> list[str]:
        return list(self.numeric) + list(self.log_numeric)

    def fit(
        self, train: pl.LazyFrame, min_count: int = 1, max_vocab: int | None = None, rows: int | None = None
    ) -> FeatureEncoder:
        """Vocabularies and statistics from ``train``, streamed: the plan is never held whole in memory.

        All vocabularies come from one streaming pass (value counts). The numeric statistics come from the
        columns themselves, a few at a time (8 bytes per train row and column), so that the float sums run in
        one fixed order and the same data always gives bit-identical means and standard deviations.
        ``rows``: the number of train rows, if known (it sizes those passes).
        """
        queries = [
            train.select(pl.col(col).alias("value"))
            .drop_nulls()
            .group_by("value")
            .agg(pl.len().alias("count"))
            .filter(pl.col("count") >= min_count)
            for col in self.categorical
        ]
        counted = pl.collect_all(queries, engine="streaming") if queries else []
        for col, counts in zip(self.categorical, counted):
            counts = counts.sort(["count", "value"], descending=[True, False])
            if max_vocab is not None:
                counts = counts.head(max_vocab)
            self.vocabularies[col] = counts.with_row_index("index", offset=1).select(
                "value", pl.col("index").cast(pl.Int32), "count"
            )
            self.dtypes[col] = str(counts.schema["value"])
        cols = self.numeric_all
        if cols:
            if rows is None:
                rows = train.select(pl.len()).collect(engine="streaming").item()
            per_pass = max(1, _STATS_BYTES // max(1, 8 * rows))
            for i in range(0, len(cols), per_pass):
                part = cols[i : i + per_pass]
                df = train.select([_pre(c, c in self.log_numeric).alias(c) for c in part]).collect(engine="streaming")
                for col in part:
                    x = df[col].rechunk()
                    mean, std = x.mean(), x.std()
                    mean = 0.0 if mean is None else float(mean)
                    std = 1.0 if (std is None or std != std or std < 1e-12) else float(std)
                    self.stats[col] = {"mean": mean, "std": std}
                    lo, hi, med = x.min(), x.max(), x.median()
                    mad = (x - med).abs().median() if med is not None else None
                    self.spread[col] = {
                        "min": None if lo is None else float(lo),
                        "max": None if hi is None else float(hi),
                        "mad": None if mad is None else float(mad),
                    }
                del df
        return self

    def transformed(self, col: str) -> pl.Expr:
        """Numeric column ``col`` as it is before z-scoring (Float64, NaN as null, log1p for log_numeric): the scale
        of ``stats`` and ``spread``."""
        return _pre(col, col in self.log_numeric)

    def cardinality(self, col: str) -> int:
        return self.vocabularies[col].height + 1

    def expressions(self) -> list[pl.Expr]:
        """Polars expressions producing the encoded ``cat__*`` (Int32) and ``num__*`` (Float32) columns."""
        exprs = []
        for col in self.categorical:
            # the lookup is a cast to an Enum whose categories are the vocabulary in index order (index = position
            # + 1; values not in it become null, then OOV): an element-wise cast, so the streaming engine runs it
            # batch by batch (replace_strict would need the whole column at once)
            values = self.vocabularies[col]["value"].cast(pl.String)
            exprs.append(
                pl.col(col)
                .cast(pl.String)
                .cast(pl.Enum(values), strict=False)
                .to_physical()
                .cast(pl.Int32)
                .add(1)
                .fill_null(OOV_INDEX)
                .alias(CAT_PREFIX + col)
            )
        for col in self.numeric_all:
            s = self.stats[col]
            x = (_pre(col, col in self.log_numeric) - s["mean"]) / s["std"]
            exprs.append(x.fill_null(0.0).cast(pl.Float32).alias(NUM_PREFIX + col))
        return exprs

    def save(self, directory: Path) -> dict:
        """Write vocabularies as Parquet under ``directory/vocab`` and return the JSON-able description."""
        vdir = directory / "vocab"
        vdir.mkdir(parents=True, exist_ok=True)
        for col, vocab in self.vocabularies.items():
            vocab.write_parquet(vdir / f"{col}.parquet")
        return {
            "categorical": [
                {
                    "name": c,
                    "cardinality": self.cardinality(c),
                    "oov_index": OOV_INDEX,
                    "dtype": self.dtypes[c],
                    "vocab_file": f"vocab/{c}.parquet",
                }
                for c in self.categorical
            ],
            "numeric": [
                {
                    "name": c,
                    "transform": "log1p" if c in self.log_numeric else "none",
                    **self.stats[c],
                    **{k: self.spread[c][k] for k in ("min", "max") if c in self.spread},
                }
                for c in self.numeric_all
            ],
        }

    @classmethod
    def load(cls, directory: Path, description: dict) -> FeatureEncoder:
        cat = [f["name"] for f in description["categorical"]]
        num = [f["name"] for f in description["numeric"] if f["transform"] == "none"]
        log = [f["name"] for f in description["numeric"] if f["transform"] == "log1p"]
        enc = cls(categorical=cat, numeric=num, log_numeric=log)
        for f in description["categorical"]:
            enc.vocabularies[f["name"]] = pl.read_parquet(Path(directory) / f["vocab_file"])
            enc.dtypes[f["name"]] = f["dtype"]
        for f in description["numeric"]:
            enc.stats[f["name"]] = {"mean": f["mean"], "std": f["std"]}
            if f.get("min") is not None and f.get("max") is not None:  # data processed before they were recorded: none
                enc.spread[f["name"]] = {"min": f["min"], "max": f["max"]}
        return enc
