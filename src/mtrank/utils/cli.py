"""How the entry points in ``src/`` end: a :class:`~mtrank.errors.UserError` is one readable block, not a traceback.

Put :func:`user_errors` under ``@hydra.main``::

    @hydra.main(version_base="1.3", config_path="../conf", config_name="train")
    @user_errors
    def main(cfg): ...

It also installs the filters of :mod:`mtrank.utils.log_filters` (warnings no user can act on) as the job
starts. In a single run a ``UserError`` (:class:`~mtrank.validation.ConfigError`,
:class:`~mtrank.data.errors.DataValidationError`, :class:`~mtrank.errors.InputFileError`, ...) is written to
stderr (and to the job's log file) as ``Error: <message>`` and the process exits with status 2. Any other
exception keeps Hydra's report with its traceback (status 1). With ``HYDRA_FULL_ERROR=1`` nothing is caught.
In a multirun the error is left to the sweeper, which records the job as failed; the Ax sweeper reports a
``UserError`` of its own (a bad search space, a failed baseline arm) the same way (:func:`exit_with`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from mtrank.errors import UserError

__all__ = ["user_errors", "exit_with", "full_error", "USER_ERROR_STATUS"]

USER_ERROR_STATUS = 2
HINT = "(set HYDRA_FULL_ERROR=1 to see the traceback)"


def full_error() -> bool:
    """Whether the user asked for everything (Hydra's own switch)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - outside Hydra: a single call
        return False


def _to_log_files(text: str) -> None:
    """The message in the job's log file(s) too (the console already gets it on stderr)."""
    record = logging.LogRecord("mtrank", logging.ERROR, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def exit_with(error: UserError) -> None:
    """Print ``error`` as one block on stderr (and into the log files) and exit with status 2."""
    text = str(error).strip() or type(error).__name__
    _to_log_files(text)
    sys.stdout.flush()
    sys.stderr.write(f"Error: {text}\n{HINT}\n")
    sys.stderr.flush()
    raise SystemExit(USER_ERROR_STATUS)


def user_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a Hydra task function (under ``@hydra.main``): the log filters are installed, and a
    ``UserError`` ends the run with one block and status 2 (see the module docstring)."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mtrank.utils.log_filters import filter_known_noise

        filter_known_noise()
        try:
            return task(*args, **kwargs)
        except UserError as exc:
            if full_error() or _multirun():
                raise
            exit_with(exc)

    return wrapper
