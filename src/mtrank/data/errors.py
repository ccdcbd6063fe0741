"""Errors raised for bad input data or bad data configuration."""

from mtrank.errors import UserError


class DataValidationError(UserError, ValueError):
    """Input data does not match what the data config says it should be.

    Messages name the file, the column or config key, and what was expected.
    """
