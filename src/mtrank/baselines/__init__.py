"""Baselines trained on exactly the processed splits and features the nets use: LightGBM (one binary model per
task, early stopping on val, categorical columns declared) and a scikit-learn logistic regression (one-hot
categoricals, standardised numerics, C chosen on val log-loss). ``python src/baselines.py`` runs one
(:func:`mtrank.baselines.job.run_baseline`); its ``metrics.json`` carries the nets' metric names.

Modules: :mod:`~mtrank.baselines.data` (processed splits as arrays), :mod:`~mtrank.baselines.config` (config
checks), :mod:`~mtrank.baselines.gbdt`, :mod:`~mtrank.baselines.logistic`, :mod:`~mtrank.baselines.job`.
"""

from mtrank.baselines.config import BASELINES, validate_baseline_config
from mtrank.baselines.data import SplitArrays, load_split

__all__ = ["BASELINES", "SplitArrays", "load_split", "validate_baseline_config"]
