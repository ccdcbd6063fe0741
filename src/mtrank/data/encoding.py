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

    @property
    def numeric_all(self) -> list[str]:
        return list(self.numeric) + list(self.log_numeric)

    def fit(self, train: pl.LazyFrame, min_count: int = 1, max_vocab: int | None = None) -> "FeatureEncoder":
        for col in self.categorical:
            counts = (
                train.select(pl.col(col).alias("value"))
                .drop_nulls()
                .group_by("value")
                .agg(pl.len().alias("count"))
                .filter(pl.col("count") >= min_count)
                .sort(["count", "value"], descending=[True, False])
                .collect()
            )
            if max_vocab is not None:
                counts = counts.head(max_vocab)
            self.vocabularies[col] = counts.with_row_index("index", offset=1).select(
                "value", pl.col("index").cast(pl.Int32), "count"
            )
            self.dtypes[col] = str(counts.schema["value"])
        if self.numeric_all:
            exprs = []
            for col in self.numeric_all:
                x = _pre(col, col in self.log_numeric)
                exprs += [x.mean().alias(f"{col}__mean"), x.std().alias(f"{col}__std")]
            row = train.select(exprs).collect().row(0, named=True)
            for col in self.numeric_all:
                mean = row[f"{col}__mean"]
                std = row[f"{col}__std"]
                mean = 0.0 if mean is None else float(mean)
                std = 1.0 if (std is None or std != std or std < 1e-12) else float(std)
                self.stats[col] = {"mean": mean, "std": std}
        return self

    def cardinality(self, col: str) -> int:
        return self.vocabularies[col].height + 1

    def expressions(self) -> list[pl.Expr]:
        """Polars expressions producing the encoded ``cat__*`` (Int32) and ``num__*`` (Float32) columns."""
        exprs = []
        for col in self.categorical:
            vocab = self.vocabularies[col]
            raw = pl.col(col)
            if self.dtypes[col] == "String":
                raw = raw.cast(pl.String)
            exprs.append(
                raw.replace_strict(vocab["value"], vocab["index"], default=OOV_INDEX, return_dtype=pl.Int32)
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
                {"name": c, "transform": "log1p" if c in self.log_numeric else "none", **self.stats[c]}
                for c in self.numeric_all
            ],
        }

    @classmethod
    def load(cls, directory: Path, description: dict) -> "FeatureEncoder":
        cat = [f["name"] for f in description["categorical"]]
        num = [f["name"] for f in description["numeric"] if f["transform"] == "none"]
        log = [f["name"] for f in description["numeric"] if f["transform"] == "log1p"]
        enc = cls(categorical=cat, numeric=num, log_numeric=log)
        for f in description["categorical"]:
            enc.vocabularies[f["name"]] = pl.read_parquet(Path(directory) / f["vocab_file"])
            enc.dtypes[f["name"]] = f["dtype"]
        for f in description["numeric"]:
            enc.stats[f["name"]] = {"mean": f["mean"], "std": f["std"]}
        return enc

