"""Config checks run when a job starts, before any data is read (docs/checks.md lists them with their messages).

A thin composition: each component's typed config (``mtrank.data.config``, ``mtrank.training.config``,
``mtrank.calibration.config``, ``mtrank.scoring.config``, ``mtrank.utility.config``, ``mtrank.tuning.config``)
is built from the composed Hydra config (:mod:`mtrank.validation.compose`) and reports its own problems under
their full keys; then the checks that span components run once:

* :func:`validate_train_config` (``train(cfg)``), :func:`validate_tune_config` (``src/tune_utility.py``),
  :func:`validate_predict_config` (``predict(cfg)``), :func:`validate_eval_config` (``src/eval.py``);
* each raises one :class:`ConfigError` (a ``ValueError``) listing every problem; each problem names its full
  config key (``callbacks.model_checkpoint.monitor``, ``utility.weights.hidee``,
  ``data.pipeline.downsample.beta``) and the allowed values;
* :class:`MetricCatalog` / :func:`catalog_for_train_config`: the metric names a training run logs.

Input data is checked where it is read: :mod:`mtrank.data.validation` (the pipeline) and, for raw logs scored
by a trained run, :mod:`mtrank.scoring.schema` (schema drift against the training files, unseen ids), used
by :mod:`mtrank.scoring.score`.
"""

from mtrank.errors import ConfigError, ConfigProblem
from mtrank.validation.jobs import validate_eval_config, validate_predict_config
from mtrank.validation.metric_names import MetricCatalog, catalog_for_train_config
from mtrank.validation.train import validate_train_config
from mtrank.validation.tune import validate_tune_config

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "MetricCatalog",
    "catalog_for_train_config",
    "validate_eval_config",
    "validate_predict_config",
    "validate_train_config",
    "validate_tune_config",
]
