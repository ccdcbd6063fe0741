"""Warnings and log lines that a run log should not carry: nothing in them is for our users to act on.

:func:`filter_known_noise` is installed at the start of every job (:func:`mtrank.utils.cli.user_errors`). Each
filter matches one message of one library, so every other warning still reaches the log:

* Lightning's ``_pytree`` calls ``isinstance(treespec, LeafSpec)``, which torch ≥ 2.9 deprecates (Lightning's
  own code, fixed upstream; nothing to change on our side);
* ``ThroughputMonitor`` asks for a ``flops_per_batch`` attribute (we report samples and batches per second, not
  FLOPs), and on a device missing from its table says that it has no FLOPs figure for it;
* Lightning's INFO tips advertising ``litlogger`` / ``litmodels``.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["filter_known_noise", "NOISE_WARNINGS", "NOISE_LOG_PREFIXES"]

# (regular expression matched against the start of the warning message, why it is not actionable)
NOISE_WARNINGS: tuple[str, ...] = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"When using the `ThroughputMonitor`, you need to define a `flops_per_batch`",
    r"FLOPs not found for ",
)
NOISE_LOG_PREFIXES: tuple[str, ...] = ("💡 Tip: For seamless cloud",)
LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not msg.startswith(NOISE_LOG_PREFIXES)


_TIPS = _DropTips()


def filter_known_noise() -> None:
    """Install the filters (idempotent)."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        if _TIPS not in lg.filters:
            lg.addFilter(_TIPS)
