"""The base class of every error a user can fix (a bad config, bad input data, a file that is not what a key
says): :class:`UserError`.

The entry points (:mod:`mtrank.utils.cli`) print a ``UserError`` as one block without a Python traceback and
exit with status 2; any other exception is a bug of ours and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows
the traceback of a ``UserError`` too.
"""

from __future__ import annotations

__all__ = ["UserError", "InputFileError"]


class UserError(Exception):
    """A problem the user can fix; its message names the config key, file or column and what is expected."""


class InputFileError(UserError, ValueError):
    """A file given in the config (a checkpoint, predictions) is missing, empty or not what the key expects."""
