"""The upstream Hydra Ax sweeper's test apps (plugins/hydra_ax_sweeper/tests/apps), for mtrank's sweeper.

``python polynomial.py -m ...`` returns 100 x² + 10 y + z (minimised); ``app=quadratic`` 100 x² + y of
``quadratic.x``, ``quadratic.y``, ``app=banana`` Rosenbrock's function of ``banana.x``, ``banana.y``,
``app=list`` / ``app=dict`` read x, y, z from ``polynomial.coefficients`` (a list or a mapping), ``app=noisy``
returns ``(value, 0.5)``, ``app=checked`` raises a ConfigError for x < -4 and ``app=noisy_dict`` ``{"value": (value, 0.5), "other": 1.0}``.
"""

from typing import Any

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="polynomial")
def polynomial(cfg: DictConfig) -> Any:
    p = cfg.polynomial
    if cfg.app == "checked" and p.x < -4:  # a config that cannot run: mtrank's user error
        from mtrank.errors import ConfigError

        raise ConfigError(f"polynomial.x = {p.x}: expected a value ≥ -4")
    if cfg.app == "quadratic":
        return 100 * cfg.quadratic.x**2 + cfg.quadratic.y
    if cfg.app == "banana":  # upstream example/banana.py: Rosenbrock's function
        x, y = cfg.banana.x, cfg.banana.y
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2
    if cfg.app == "list":
        x, y, z = p.coefficients
    elif cfg.app == "dict":
        x, y, z = p.coefficients.x, p.coefficients.y, p.coefficients.z
    else:
        x, y, z = p.x, p.y, p.z
    value = 100 * x**2 + 10 * y + z
    if cfg.app == "noisy":
        return value, 0.5
    if cfg.app == "noisy_dict":
        return {"value": (value, 0.5), "other": 1.0}
    return value


if __name__ == "__main__":
    polynomial()
