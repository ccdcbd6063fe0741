"""Errors raised for bad input data or bad data configuration."""

from mtrank.errors import UserError


class DataValidationError(UserError, ValueError):
    """Input data does not match what the data config says it should be.

    Messages name the file, the column or config key, and what was expected; ``key`` is the full config key of a
    bad data config (``data.pipeline.split.by``), None for bad data.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
