"""The config error and its collector, now in :mod:`mtrank.errors` (components raise them); kept here for imports."""

from mtrank.errors import ConfigError, ConfigProblem, Problems, fmt_list, suggest

__all__ = ["ConfigError", "ConfigProblem", "Problems", "fmt_list", "suggest"]
