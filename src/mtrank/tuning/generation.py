"""How Ax generates trials (method, GP settings, torch threads) and how quiet it is."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

METHODS = ("fast", "random_search")
SIMPLEX = ("derived", "box")


@dataclass(frozen=True)
class GenerationConfig:
    """How Ax proposes trials.

    ``method``: ``fast`` (Ax's Bayesian optimisation: Sobol initialisation, then a GP with an acquisition
    function — model fitting costs seconds per trial) or ``random_search`` (quasi-random Sobol points, the
    comparator). ``initialization_budget``: Sobol trials before the GP (``None``: Ax's default, 5).
    ``seed``: seeds the Sobol sequence and the generation calls. ``noiseless``: report metrics with zero
    standard error (deterministic objectives such as f_t on a fixed predictions file) instead of letting
    Ax infer the noise. ``num_restarts`` / ``raw_samples`` / ``maxiter``: the acquisition optimiser's
    budget (``None``: Ax's defaults 20 / 1024 / 200). With parameter constraints (the sum constraint)
    BoTorch optimises with SLSQP, which dominates the seconds per GP trial on a small CPU; fewer restarts
    and raw samples cut it roughly in proportion. ``torch_threads``: torch's intra-op threads while Ax
    generates (``None``: leave as is). The GP's tensors are tiny, so one thread is fastest — several threads
    on a busy machine made each trial ~8x slower in our measurements. ``simplex``: how Ax sees a sum constraint
    (S1): ``derived`` — the free weights with linear inequalities for the derived one's bounds (BoTorch's
    hit-and-run sampling and SLSQP); ``box`` — one ``[0, 1]`` coordinate per free weight, mapped onto the
    weights exactly by :class:`mtrank.tuning.simplex.BoxMap` (Sobol raw samples and L-BFGS-B, several times
    faster per GP trial). A resumed experiment keeps the parameterisation it was created with.
    """

    method: str = "fast"
    initialization_budget: int | None = None
    initialize_with_center: bool = True
    seed: int | None = 0
    noiseless: bool = False
    num_restarts: int | None = None
    raw_samples: int | None = None
    maxiter: int | None = None
    torch_threads: int | None = 1
    simplex: str = "derived"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"generation.method must be one of {list(METHODS)}, got {self.method!r}")
        if self.simplex not in SIMPLEX:
            raise ValueError(f"generation.simplex must be one of {list(SIMPLEX)}, got {self.simplex!r}")
        if self.initialization_budget is not None and self.initialization_budget < 0:
            raise ValueError(f"generation.initialization_budget must be >= 0, got {self.initialization_budget}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> GenerationConfig:
        m = dict(m or {})
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(m) - allowed)
        if unknown:
            raise ValueError(f"unknown generation key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**m)

    def strategy(self) -> Any:
        """Ax's own generation strategy for ``method`` (what ``Client.configure_generation_strategy`` builds),
        with the acquisition optimiser's budget set when given."""
        from ax.api.utils.generation_strategy_dispatch import choose_generation_strategy
        from ax.api.utils.structs import GenerationStrategyDispatchStruct
        from ax.generators.torch.botorch_modular.generator import BoTorchGenerator

        gs = choose_generation_strategy(
            GenerationStrategyDispatchStruct(
                method=self.method,  # type: ignore[arg-type]
                initialization_budget=self.initialization_budget,
                initialization_random_seed=self.seed,
                initialize_with_center=self.initialize_with_center,
            )
        )
        opts: dict[str, Any] = {
            k: v for k, v in (("num_restarts", self.num_restarts), ("raw_samples", self.raw_samples)) if v is not None
        }
        if self.maxiter is not None:
            opts["options"] = {"maxiter": int(self.maxiter)}
        if opts:
            for node in gs.nodes_by_name.values():
                for spec in node.generator_specs:
                    if spec.generator_enum.generator_class is BoTorchGenerator:
                        spec.generator_gen_kwargs = {
                            **spec.generator_gen_kwargs,
                            "model_gen_options": {"optimizer_kwargs": opts},
                        }
        return gs


def quiet_ax(level: int = logging.WARNING) -> None:
    """Ax logs every trial at INFO; keep our own per-trial line instead."""
    from ax.utils.common.logger import set_ax_logger_levels

    set_ax_logger_levels(level)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
