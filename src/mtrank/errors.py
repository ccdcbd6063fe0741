"""The errors a user can fix: :class:`UserError`, and for configs :class:`ConfigError` with the collector
:class:`Problems` that every component's typed config fills.

The entry points (:mod:`mtrank.utils.cli`) print a ``UserError`` as one block without a Python traceback and
exit with status 2; any other exception is a bug of ours and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows
the traceback of a ``UserError`` too.

A component's config (``mtrank.training.config``, ``mtrank.calibration.config``, ...) checks itself when it is
built and raises one :class:`ConfigError` listing each of its problems under its full key
(``model.optimizer.lr``); :mod:`mtrank.validation` gathers those of every component of a job into one error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["UserError", "InputFileError", "ConfigError", "ConfigProblem", "Problems", "fmt_list", "suggest"]


class UserError(Exception):
    """A problem the user can fix; its message names the config key, file or column and what is expected."""


class InputFileError(UserError, ValueError):
    """A file given in the config (a checkpoint, predictions) is missing, empty or not what the key expects."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem: the full config key (``callbacks.model_checkpoint.monitor``) and a sentence that names it."""

    key: str
    message: str


class ConfigError(UserError, ValueError):
    """A config that cannot run. Raised before any data is read; every problem names its full config key and
    what is allowed. ``problems`` lists them all (a run reports every problem at once, not the first only)."""

    def __init__(self, problems: Sequence[ConfigProblem] | str, job: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("", problems)]
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        self.job = job
        head = f"invalid {job} config" if job else "invalid config"
        if len(self.problems) == 1:
            text = f"{head}: {self.problems[0].message}"
        else:
            text = f"{head}, {len(self.problems)} problems:\n" + "\n".join(f"  - {p.message}" for p in self.problems)
        super().__init__(text)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.problems]


class Problems:
    """Collects :class:`ConfigProblem` s; :meth:`raise_if_any` raises them together as one :class:`ConfigError`."""

    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, key: str, message: str) -> None:
        if not any(p.key == key and p.message == message for p in self.items):
            self.items.append(ConfigProblem(key, message))

    def extend(self, error: ConfigError) -> None:
        """The problems of a component's :class:`ConfigError`, each under the key it names."""
        for p in error.problems:
            self.add(p.key, p.message)

    def has(self, prefix: str) -> bool:
        """Whether a problem was found at ``prefix`` or below it."""
        return any(
            p.key == prefix or p.key.startswith(prefix + ".") or p.key.startswith(prefix + "[") for p in self.items
        )

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, job: str = "") -> None:
        if self.items:
            raise ConfigError(self.items, job)


def fmt_list(values: Iterable[Any]) -> str:
    """``['a', 'b']`` as the user would write it in YAML: ``[a, b]``."""
    return "[" + ", ".join(str(v) for v in values) + "]"


def suggest(value: Any, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` when a candidate is close to ``value``, else ``""``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in candidates], n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""
