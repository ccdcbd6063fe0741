"""Small helpers shared by the Hydra entry points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def metric_for_sweeper(metrics: Mapping[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises; a clear error when the configured metric was never logged."""
    if not name:
        return None
    if name not in metrics:
        known = sorted(k for k in metrics if not k.startswith("time/"))
        raise KeyError(f"optimized_metric={name} was not logged; logged metrics: {known}")
    return float(metrics[name])
