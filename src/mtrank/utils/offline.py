"""Offline means offline: W&B in offline mode makes no socket connection or DNS query.

``wandb.init(mode="offline")`` alone still let W&B 0.31 resolve its default server ``api.forge.coreweave.com`` (its
OpenTelemetry proxy probes it), collect git and machine metadata and report its own errors to Sentry. :func:`use_wandb_offline`
sets W&B's documented settings (environment variables, read when a run starts, by the Python SDK and by its
``wandb-core`` service) that turn all of that off. It is called wherever mtrank starts W&B offline
(``logger=wandb`` with ``logger.wandb.offline=true``, ``src/tune_utility.py wandb.enabled=true`` with
``wandb.mode=offline``); opting in online (``logger.wandb.offline=false``, ``wandb.mode=online``) leaves W&B as it is.
``tests/test_offline.py`` runs the tuning job with every connection and name resolution recorded.
"""

from __future__ import annotations

import os

# WANDB_X_* map onto wandb.Settings' x_* fields (wandb.sdk.wandb_settings.Settings.update_from_env_vars)
OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_ERROR_REPORTING": "false",  # no Sentry (Python SDK, and wandb-core's --no-observability)
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_DISABLE_JOB_CREATION": "true",
    "WANDB_X_DISABLE_STATS": "true",  # the system monitor (CPU, GPU, cloud metadata)
    "WANDB_X_DISABLE_MACHINE_INFO": "true",
    "WANDB_X_DISABLE_META": "true",
    "WANDB_X_SAVE_REQUIREMENTS": "false",
}


def use_wandb_offline() -> None:
    """Set :data:`OFFLINE_ENV` in this process (and so in the W&B service it starts)."""
    os.environ.update(OFFLINE_ENV)


def is_offline_wandb_logger(conf) -> bool:
    """Whether a logger config builds Lightning's ``WandbLogger`` in offline mode."""
    target = str(conf.get("_target_", ""))
    return target.endswith("WandbLogger") and bool(conf.get("offline", False))
