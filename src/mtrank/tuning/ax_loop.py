"""The Ax core shared by ``src/tune_utility.py`` and the Hydra sweeper ``hydra/sweeper=ax``.

:class:`AxLoop` wraps one ``ax.Client`` (Ax ≥ 1.3):

* **search space** from :class:`~mtrank.tuning.space.SearchSpace` (S1 exact through a derived parameter or the
  box map of ``generation.simplex: box``; S2 bounds), every generated trial checked before it is handed out;
  callers see the weights, never box coordinates;
* **objective and outcome constraints** (S3–S5, relative to an evaluated baseline arm): :mod:`.outcomes`;
* **baseline arm** attached first (``Client.attach_baseline``) and evaluated like any trial;
* **ask / tell / fail** for callers that launch trials themselves (the sweeper), :meth:`AxLoop.run` in process;
* **state** in one Ax JSON snapshot, rewritten atomically after every change. A trial is saved as RUNNING
  before it is evaluated, so a run killed at any point resumes with :meth:`AxLoop.open`: trials left
  RUNNING are evaluated again with their stored parameters (same trial index), nothing else is redone,
  and the loop stops when ``n_trials`` trials (besides the baseline) have finished.

The few reads of Ax state that the ``Client`` does not expose publicly (trials and data) are kept here.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtrank.tuning.generation import GenerationConfig, torch_threads
from mtrank.tuning.outcomes import OutcomeConstraint, violations
from mtrank.tuning.space import SearchSpace
from mtrank.utils.io import atomic_write

log = logging.getLogger(__name__)


BASELINE_ARM = "baseline"


def _atomic_save(client: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: client.save_to_json_file(str(tmp)))


@dataclass
class TrialRecord:
    """One trial as the reports see it."""

    index: int
    arm: str
    status: str  # RUNNING | COMPLETED | FAILED | ABANDONED | ...
    node: str | None
    params: dict[str, Any]
    metrics: dict[str, float]
    is_baseline: bool
    feasible: bool | None
    violations: list[str] = field(default_factory=list)
    reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trial": self.index,
            "arm": self.arm,
            "status": self.status,
            "generator": self.node or "",
            "baseline": self.is_baseline,
            "feasible": self.feasible,
        }
        out.update(self.params)
        out.update(self.metrics)
        out["gen_seconds"] = self.seconds.get("gen_seconds")
        out["eval_seconds"] = self.seconds.get("eval_seconds")
        out["violations"] = "; ".join(self.violations)
        out["reason"] = self.reason or ""
        return out


class AxLoop:
    """An Ax experiment with its budget, its baseline and its JSON state file (see module docstring)."""

    def __init__(
        self,
        client: Any,
        space: SearchSpace,
        objective: str,
        constraints: Sequence[OutcomeConstraint],
        n_trials: int,
        minimize: bool = False,
        path: str | os.PathLike | None = None,
        generation: GenerationConfig = GenerationConfig(),
        box: bool = False,
    ) -> None:
        self.client = client
        self.box = box  # the Ax experiment's parameters are box coordinates (mtrank.tuning.simplex)
        self.space = space
        self.objective = objective
        self.constraints = list(constraints)
        self.n_trials = int(n_trials)
        self.minimize = minimize
        self.path = Path(path) if path is not None else None
        self.generation = generation
        self.exhausted = False  # Ax found no untried point of a discrete space

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        space: SearchSpace,
        objective: str,
        n_trials: int,
        constraints: Sequence[OutcomeConstraint] = (),
        minimize: bool = False,
        generation: GenerationConfig = GenerationConfig(),
        baseline: Mapping[str, Any] | None = None,
        path: str | os.PathLike | None = None,
        name: str = "mtrank",
    ) -> AxLoop:
        from ax import Client

        if n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials}")
        if any(c.relative for c in constraints) and baseline is None:
            raise ValueError(
                f"relative outcome constraints {[str(c) for c in constraints if c.relative]} need a baseline arm"
            )
        if objective in {c.metric for c in constraints}:
            raise ValueError(f"the objective {objective} cannot also carry an outcome constraint")
        client = Client(random_seed=generation.seed)
        box = generation.simplex == "box" and space.sum_constraint is not None
        client.configure_experiment(
            parameters=space.ax_parameters(box),
            parameter_constraints=space.ax_parameter_constraints(box) or None,
            name=name,
        )
        client.configure_optimization(
            objective=f"-{objective}" if minimize else objective,
            outcome_constraints=[c.ax_string() for c in constraints] or None,
        )
        client.set_generation_strategy(generation.strategy())
        loop = cls(client, space, objective, constraints, n_trials, minimize, path, generation, box)
        if baseline is not None:
            values = space.complete(baseline)
            problems = space.check(values)
            if problems:
                raise ValueError(f"the baseline arm is outside the search space: {problems}")
            client.attach_baseline(parameters=space.to_ax(values, box), arm_name=BASELINE_ARM)
        loop.save()
        return loop

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        space: SearchSpace,
        objective: str,
        n_trials: int,
        constraints: Sequence[OutcomeConstraint] = (),
        minimize: bool = False,
        generation: GenerationConfig = GenerationConfig(),
    ) -> AxLoop:
        """Resume from an Ax snapshot. The generation strategy and the parameterisation (``simplex``) are the ones
        saved in it; from ``generation`` only the run-time settings (``noiseless``, ``torch_threads``) are taken."""
        from ax import Client

        p = Path(path)
        try:
            client = Client.load_from_json_file(str(p))
        except Exception as e:  # noqa: BLE001 - name the file in the error
            raise RuntimeError(f"cannot resume from {p}: not a readable Ax client snapshot ({e})") from e
        got = set(client._experiment.search_space.parameters)  # noqa: SLF001
        box = space.sum_constraint is not None and got == set(space.ax_names(box=True))
        if not box and got != set(space.names):
            raise ValueError(
                f"cannot resume from {p}: its search space has parameters {sorted(got)}, the configuration "
                f"{sorted(space.names)}; start a new run (resume=false) or point to another state file"
            )
        opt = client._experiment.optimization_config  # noqa: SLF001
        if opt is not None and objective not in opt.objective.metric_names:
            raise ValueError(f"cannot resume from {p}: it optimises {opt.objective.metric_names}, not {objective}")
        stored = sorted(m for c in (opt.outcome_constraints if opt is not None else []) for m in c.metric_names)
        wanted = sorted(c.metric for c in constraints)
        if stored != wanted:
            raise ValueError(
                f"cannot resume from {p}: its outcome constraints are on {stored}, the configuration's on "
                f"{wanted}; start a new run (resume=false) to change the problem"
            )
        loop = cls(client, space, objective, constraints, n_trials, minimize, p, generation, box)
        log.info("Resumed %s: %d finished, %d running, budget %d", p, loop.n_finished, len(loop.pending()), n_trials)
        return loop

    @classmethod
    def open(cls, path: str | os.PathLike, resume: bool = True, **kwargs: Any) -> AxLoop:
        """Resume from ``path`` when it exists (and ``resume``), else start a new experiment saved there."""
        p = Path(path)
        if resume and p.exists():
            keep = {k: kwargs[k] for k in ("space", "objective", "n_trials", "constraints", "minimize") if k in kwargs}
            return cls.load(p, generation=kwargs.get("generation") or GenerationConfig(), **keep)
        return cls.create(path=p, **kwargs)

    def save(self) -> None:
        if self.path is not None:
            _atomic_save(self.client, self.path)

    # ------------------------------------------------------------------ state
    @property
    def _experiment(self) -> Any:
        return self.client._experiment  # noqa: SLF001 - the Client exposes no public trial listing

    @property
    def baseline_index(self) -> int | None:
        for i, t in self._experiment.trials.items():
            if t.arm is not None and t.arm.name == BASELINE_ARM:
                return i
        return None

    def _status(self, i: int) -> str:
        return self._experiment.trials[i].status.name

    @property
    def n_finished(self) -> int:
        """Trials besides the baseline that completed or failed (abandoned ones do not count)."""
        b = self.baseline_index
        return sum(1 for i in self._experiment.trials if i != b and self._status(i) in ("COMPLETED", "FAILED"))

    @property
    def n_completed(self) -> int:
        b = self.baseline_index
        return sum(1 for i in self._experiment.trials if i != b and self._status(i) == "COMPLETED")

    def pending(self) -> dict[int, dict[str, Any]]:
        """RUNNING trials (the baseline first): generated or attached but never finished."""
        b = self.baseline_index
        idx = sorted((i for i in self._experiment.trials if self._status(i) == "RUNNING"), key=lambda i: (i != b, i))
        return {i: self._params(i) for i in idx}

    def _params(self, i: int) -> dict[str, Any]:  # the weights, also when Ax searches box coordinates
        return self.space.from_ax(self._experiment.trials[i].arm.parameters, self.box)

    @property
    def remaining(self) -> int:
        b = self.baseline_index
        running = sum(1 for i in self.pending() if i != b)
        return max(0, self.n_trials - self.n_finished - running)

    @property
    def done(self) -> bool:
        return self.n_finished >= self.n_trials and not self.pending()

    def baseline_values(self) -> dict[str, float] | None:
        b = self.baseline_index
        if b is None or self._status(b) != "COMPLETED":
            return None
        return self._metrics().get(b, {})

    # ------------------------------------------------------------------ ask / tell
    def ask(self, n: int = 1, save: bool = True) -> dict[int, dict[str, Any]]:
        """Up to ``n`` new trials (fewer when the budget or Ax's own limits say so), marked RUNNING and (with
        ``save``) saved before they are handed out — what a caller launching long jobs needs to resume them.
        Returns ``{}`` (and sets ``exhausted``) when a discrete space has no untried point left (counted here, or
        Ax's ``SearchSpaceExhausted``, which costs it a minute of rejection sampling to find).
        An in-process caller that evaluates at once may skip that save: a trial generated but never told is
        simply generated again on resume (the snapshot holds the generator's state as of the last save)."""
        from ax.exceptions.core import SearchSpaceExhausted

        n = min(int(n), self.remaining)
        size = self.space.n_points
        if size is not None and n > 0:  # a discrete space: never ask Ax for more points than are left untried
            tried = {
                tuple(sorted(t.arm.parameters.items()))
                for t in self._experiment.trials.values()
                if t.arm is not None and t.status.name != "ABANDONED"
            }
            if len(tried) >= size:
                log.info("Every one of the %d points of the search space was tried", size)
                self.exhausted = True
                return {}
            n = min(n, size - len(tried))
        if n <= 0:
            return {}
        t0 = time.perf_counter()
        with torch_threads(self.generation.torch_threads), warnings.catch_warnings():
            # expected with exact observations (noiseless) and before a feasible trial exists
            warnings.filterwarnings("ignore", message="Very small noise values detected")
            warnings.filterwarnings("ignore", message="When all training points are infeasible")
            try:
                trials = self.client.get_next_trials(max_trials=n)
            except SearchSpaceExhausted as exc:  # every point of a discrete space was tried: the loop ends
                log.info("Ax: the search space is exhausted (%s)", str(exc).splitlines()[0][:200])
                self.exhausted = True
                return {}
        seconds = (time.perf_counter() - t0) / max(1, len(trials))
        trials = {i: self.space.from_ax(p, self.box) for i, p in trials.items()}
        for i, params in trials.items():
            problems = self.space.check(params)
            if problems:  # never hand out a trial outside S1/S2
                self.client.mark_trial_abandoned(i)
                self.save()
                raise RuntimeError(f"Ax proposed trial {i} outside the search space: {problems}; it was abandoned")
            self._experiment.trials[i].update_run_metadata({"gen_seconds": seconds})
        if save:
            self.save()
        return {i: dict(p) for i, p in trials.items()}

    def _clean(self, i: int, values: Mapping[str, Any]) -> dict[str, Any]:
        needed = [self.objective] + [c.metric for c in self.constraints]
        missing = [m for m in needed if m not in values]
        if missing:
            raise KeyError(f"trial {i}: metric(s) {missing} missing from the result; got {sorted(values)}")
        out: dict[str, Any] = {}
        for k, v in values.items():
            if isinstance(v, (tuple, list)):
                mean, sem = float(v[0]), (None if v[1] is None else float(v[1]))
            else:
                mean, sem = float(v), (0.0 if self.generation.noiseless else None)
            if not math.isfinite(mean):
                raise ValueError(f"trial {i}: metric {k} is {mean}; mark the trial failed instead")
            out[k] = mean if sem is None else (mean, sem)
        return out

    def tell(self, i: int, values: Mapping[str, Any], eval_seconds: float | None = None) -> None:
        """Complete trial ``i`` with its metrics (floats, or ``(mean, sem)`` pairs) and save."""
        data = self._clean(i, values)
        if eval_seconds is not None:
            self._experiment.trials[i].update_run_metadata({"eval_seconds": float(eval_seconds)})
        self.client.complete_trial(trial_index=i, raw_data=data)
        self.save()

    def fail(self, i: int, reason: str) -> None:
        self.client.mark_trial_failed(trial_index=i, failed_reason=reason[:500])
        self.save()

    def run(
        self,
        evaluate: Callable[[dict[str, Any]], Mapping[str, Any]],
        on_trial: Callable[[TrialRecord], None] | None = None,
    ) -> None:
        """Evaluate in this process until the budget is spent: pending trials (the baseline first), then new ones.
        An exception in ``evaluate`` marks the trial failed; it is re-raised only for the baseline (no relative
        constraint can be checked without it)."""
        while True:
            todo = self.pending() or self.ask(1, save=False)
            if not todo:
                break
            for i, params in todo.items():
                t0 = time.perf_counter()
                try:
                    values = evaluate(params)
                except Exception as e:  # noqa: BLE001 - recorded in Ax, the loop goes on
                    self.fail(i, f"{type(e).__name__}: {e}")
                    log.error("Trial %d failed: %s", i, e)
                    if i == self.baseline_index:
                        raise
                    continue
                self.tell(i, values, eval_seconds=time.perf_counter() - t0)
                if on_trial is not None:
                    on_trial(self.record(i))

    # ------------------------------------------------------------------ reading results
    def _metrics(self) -> dict[int, dict[str, float]]:
        df = self._experiment.lookup_data().df
        out: dict[int, dict[str, float]] = {}
        for t, m, v in zip(df["trial_index"], df["metric_name"], df["mean"]):
            out.setdefault(int(t), {})[str(m)] = float(v)
        return out

    def records(self) -> list[TrialRecord]:
        metrics = self._metrics()
        base = self.baseline_values()
        b = self.baseline_index
        out = []
        for i, t in sorted(self._experiment.trials.items()):
            status = t.status.name
            vals = metrics.get(i, {})
            feasible: bool | None = None
            viol: list[str] = []
            if status == "COMPLETED" and (base is not None or not any(c.relative for c in self.constraints)):
                viol = violations(vals, self.constraints, base)
                feasible = not viol
            gr = t.generator_run
            node = getattr(gr, "_generation_node_name", None) if gr is not None else None
            md = t.run_metadata or {}
            out.append(
                TrialRecord(
                    index=i,
                    arm=t.arm.name,
                    status=status,
                    node=node if i != b else "baseline",
                    params=self._params(i),
                    metrics=vals,
                    is_baseline=i == b,
                    feasible=feasible,
                    violations=viol,
                    reason=t.status_reason,
                    seconds={k: float(md[k]) for k in ("gen_seconds", "eval_seconds") if k in md},
                )
            )
        return out

    def record(self, i: int) -> TrialRecord:
        return next(r for r in self.records() if r.index == i)

    def best(self, include_baseline: bool = True, records: Sequence[TrialRecord] | None = None) -> TrialRecord | None:
        """The completed trial with the best observed objective among those meeting every outcome
        constraint, or ``None`` when none does (``records``: reuse a :meth:`records` result)."""
        cands = [
            r
            for r in (self.records() if records is None else records)
            if r.status == "COMPLETED"
            and r.feasible
            and self.objective in r.metrics
            and (include_baseline or not r.is_baseline)
        ]
        if not cands:
            return None
        sign = -1.0 if self.minimize else 1.0
        return max(cands, key=lambda r: (sign * r.metrics[self.objective], -r.index))
