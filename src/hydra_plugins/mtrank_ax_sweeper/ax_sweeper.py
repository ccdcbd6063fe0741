"""``hydra/sweeper=ax``: a Hydra sweeper on the modern Ax ``Client`` (ax-platform ≥ 1.3).

The ``hydra-ax-sweeper`` on PyPI pins ax-platform < 0.2.1 and does not run with Ax 1.x; this one shares
its core (:class:`mtrank.tuning.ax_loop.AxLoop`) with ``src/tune_utility.py``. Configure it under
``hydra.sweeper`` (see ``conf/hydra/sweeper/ax.yaml`` for every key)::

    params:                       # Hydra's sweep grammar, or fixed values passed to every job
      model.optimizer.lr: tag(log, interval(1e-4, 1e-2))
      model.net.trunk_width: choice(64, 128, 256)
      model.net.dropout: interval(0.0, 0.3)
    sum_constraint: {params: [a, b, c], total: 1.0, derived: c}   # Σ = total exactly (c = total − a − b)
    parameter_constraints: ["a + b <= 0.9"]                        # linear inequalities, Ax syntax
    outcome_constraints: ["val/click/auroc >= 0.99 * baseline"]    # relative to the baseline arm, or absolute
    baseline: config              # the composed config's values | {name: value} | null

Sweep-grammar overrides on the command line (``model.optimizer.lr=interval(1e-4,1e-2)``) become search
parameters too; plain overrides go to every job, and a plain value for a parameter of ``params``
(``model.net.dropout=0.1``) fixes that parameter (as the upstream Hydra Ax sweeper does). Choices between
lists or mappings (``a=[1,2],[3,4]``, ``a=choice({x:1},{x:2})``) are searched as their override text and
passed to the job as lists / mappings. Each trial runs as job ``<sweep dir>/<trial index>``. A job's metrics
are its return value (a number is the objective, a ``(mean, sem)`` pair a noisy observation of it; a
mapping gives several metrics, each a number or a ``(mean, sem)`` pair) completed by
``<job dir>/<metrics_file>`` (its ``metrics`` entry or the whole file) for metrics the return value lacks.
Failed jobs are marked failed in Ax. A discrete space with fewer points than ``n_trials`` is searched
through and the sweep ends there with its best trial. A :class:`~mtrank.errors.UserError` (a bad search space,
a failed baseline arm's config) ends the sweep with one message and exit status 2. The Ax experiment is saved to
``<sweep dir>/ax_experiment.json`` after every change: rerun the same command with
``hydra.sweep.dir=<that folder>`` to resume. Results: ``optimization_results.yaml``, ``trials.csv``,
``trials.png`` in the sweep folder.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mtrank.errors import UserError
from mtrank.tuning.sweep_syntax import describe_param, format_value, parse_param
from mtrank.utils.cli import exit_with, full_error
from mtrank.utils.config import plain

log = logging.getLogger(__name__)

__all__ = ["AxSweeper"]


class AxSweeper(Sweeper):
    """Bayesian optimisation of a Hydra app's config with Ax (see the module docstring)."""

    def __init__(
        self,
        objective: str,
        minimize: bool = False,
        n_trials: int = 20,
        batch_size: int = 1,
        params: Mapping[str, Any] | None = None,
        sum_constraint: Mapping[str, Any] | None = None,
        parameter_constraints: Sequence[str] | None = None,
        outcome_constraints: Sequence[str] | None = None,
        baseline: Any = "config",
        generation: Mapping[str, Any] | None = None,
        metrics_file: str | None = "metrics.json",
        state_file: str | None = None,
        resume: bool = True,
        max_failures: int | None = None,
    ) -> None:
        if not objective:
            raise ValueError("hydra.sweeper.objective is empty: name the metric the jobs return")
        if int(batch_size) < 1:
            raise ValueError(f"hydra.sweeper.batch_size must be >= 1, got {batch_size}")
        self.objective = str(objective)
        self.minimize = bool(minimize)
        self.n_trials = int(n_trials)
        self.batch_size = int(batch_size)
        self.params = dict(plain(params) or {})
        self.sum_constraint = plain(sum_constraint)
        self.parameter_constraints = list(plain(parameter_constraints) or [])
        self.outcome_constraints = list(plain(outcome_constraints) or [])
        self.baseline = plain(baseline)
        self.generation = dict(plain(generation) or {})
        self.metrics_file = metrics_file
        self.state_file = state_file
        self.resume = bool(resume)
        self.max_failures = max_failures
        self._constraints: list[Any] = []
        self.described: list[str] = []
        self._cli_fixed: set[str] = set()  # searched parameters that a command-line value fixes
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------ building blocks
    def search_space(self, arguments: Sequence[str]) -> tuple[Any, list[str]]:
        """The Ax search space from ``params`` and sweep overrides in ``arguments``; the fixed overrides.

        A plain command-line value for a parameter of ``params`` fixes it. ``self.described`` gets one line per
        parameter for the log (``name: range=[a, b]``, ``name: choice=[...]``, ``name: fixed=v``)."""
        from mtrank.errors import ConfigError
        from mtrank.tuning.space import SearchSpace, SumConstraint

        specs: dict[str, Any] = dict(self.params)
        fixed: list[str] = []
        fixed_text: dict[str, str] = {}
        parser = OverridesParser.create()
        for arg in arguments:
            ov = parser.parse_overrides([arg])[0]
            key = ov.get_key_element()
            if ov.is_sweep_override():
                specs[key] = arg.split("=", 1)[1]
                continue
            fixed.append(arg)
            for k in (key, key.lstrip("+~")):
                if k in specs:
                    del specs[k]
                    self._cli_fixed.add(k)
                    log.info("%s=%s on the command line fixes that search parameter", k, arg.split("=", 1)[-1])
            if "=" in arg and not ov.is_delete():
                fixed_text[key] = arg.split("=", 1)[1]
        params = []
        for name, spec in specs.items():
            try:
                p = parse_param(name, spec)
            except ValueError as exc:
                raise ConfigError(
                    str(exc)
                    if str(exc).startswith("hydra.sweeper.params")
                    else f"hydra.sweeper.params.{name} = {spec!r}: {exc}"
                ) from exc
            if p is None:
                value = plain(spec)
                if isinstance(value, Mapping):  # {type: fixed, value: v}
                    value = value.get("value")
                fixed.append(f"{name}={format_value(value)}")
                fixed_text[name] = format_value(value)
            else:
                params.append(p)
        if not params:
            raise ConfigError("hydra.sweeper.params defines no search parameter (use interval(...), choice(...), ...)")
        self.described = [describe_param(p) for p in params] + [f"{k}: fixed={v}" for k, v in fixed_text.items()]
        sc = None
        try:
            if self.sum_constraint:
                s = dict(self.sum_constraint)
                names = list(s.get("params") or [])
                sc = SumConstraint(tuple(names), float(s["total"]), str(s.get("derived") or names[-1]))
            return SearchSpace(tuple(params), sc, tuple(self.parameter_constraints)), fixed
        except ValueError as exc:
            raise ConfigError(f"hydra.sweeper: {exc}") from exc

    def baseline_params(self, space: Any) -> dict[str, Any] | None:
        if self.baseline is None or self.baseline is False:
            return None
        if isinstance(self.baseline, Mapping):
            values = {k: v for k, v in dict(self.baseline).items() if k not in self._cli_fixed}
            dropped = sorted(set(self.baseline) - set(values))
            if dropped:
                log.info("Baseline arm: %s fixed on the command line, not searched", dropped)
        elif self.baseline == "config":
            assert self.config is not None
            values = {}
            for name in space.free_names:
                v = OmegaConf.select(self.config, name, default=None)
                if v is None:
                    raise ValueError(
                        f"hydra.sweeper.baseline=config: the composed config has no value for {name}; "
                        f"set hydra.sweeper.baseline to a mapping or to null"
                    )
                values[name] = v
        else:
            raise ValueError(f"hydra.sweeper.baseline must be 'config', a mapping or null, got {self.baseline!r}")
        return space.complete(values)

    def _metrics(self, value: Any, output_dir: str | None) -> dict[str, Any]:
        """A job's metrics: every number or ``(mean, sem)`` pair of its return value (a bare one is the objective;
        a pair is passed to Ax as a noisy observation with that standard error), then the metrics
        the loop needs that are still missing, from ``<job dir>/<metrics_file>``."""
        out: dict[str, Any] = {}
        if isinstance(value, Mapping):
            out.update({str(k): _observation(v) for k, v in value.items() if _observation(v) is not None})
        elif _observation(value) is not None:  # a number, or a (mean, sem) pair: the objective
            out[self.objective] = _observation(value)
        needed = [self.objective] + [c.metric for c in self._constraints]
        missing = [m for m in needed if m not in out]
        if missing and self.metrics_file and output_dir:
            path = Path(output_dir) / self.metrics_file
            if path.exists():
                data = json.loads(path.read_text())
                data = data.get("metrics", data) if isinstance(data, Mapping) else {}
                for m in missing:
                    v = data.get(m)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        out[m] = float(v)
        return out

    # ------------------------------------------------------------------ the sweep
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except UserError as exc:
            if full_error():
                raise
            exit_with(exc)

    def _sweep(self, arguments: list[str]) -> Any:
        from mtrank.tuning.ax_loop import AxLoop
        from mtrank.tuning.generation import GenerationConfig, quiet_ax
        from mtrank.tuning.outcomes import parse_constraints

        assert self.config is not None and self.launcher is not None
        from mtrank.validation import validate_train_config, validate_tune_config

        # a bad config or search space of mtrank's own jobs fails before any job is launched
        validate = {"train": validate_train_config, "tune_utility": validate_tune_config}.get(
            str(self.config.hydra.job.name)
        )
        if validate is not None:
            validate(self.config)
        quiet_ax()
        space, fixed = self.search_space(arguments)
        self._constraints = parse_constraints(self.outcome_constraints)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        state = Path(self.state_file) if self.state_file else sweep_dir / "ax_experiment.json"
        gen = GenerationConfig.from_mapping(self.generation)
        baseline = self.baseline_params(space)
        n_trials = self.n_trials
        size = space.n_points
        if size is not None and n_trials + (baseline is not None) > size:
            n_trials = max(1, size - (baseline is not None))
            log.info(
                "The search space has %d points only: %d trials instead of hydra.sweeper.n_trials=%d",
                size,
                n_trials,
                self.n_trials,
            )
        loop = AxLoop.open(
            state,
            resume=self.resume,
            space=space,
            objective=self.objective,
            n_trials=n_trials,
            constraints=self._constraints,
            minimize=self.minimize,
            generation=gen,
            baseline=baseline,
            name=str(self.config.hydra.job.name),
        )
        literal = {p.name for p in space.params if getattr(p, "literal", False)}
        log.info(
            "Ax sweep: %d trials%s in batches of %d; state %s; parameters:\n%s",
            n_trials,
            " (+ baseline)" if loop.baseline_index is not None else "",
            self.batch_size,
            state,
            "\n".join(f"  {line}" for line in self.described),
        )
        failures = 0
        while not loop.done:
            batch = loop.pending()
            if len(batch) < self.batch_size:
                batch.update(loop.ask(self.batch_size - len(batch)))
            if not batch:
                log.warning(
                    "Ax proposed no new trial%s; stopping with %d of %d finished",
                    " (every point of the search space was tried)" if loop.exhausted else "",
                    loop.n_finished,
                    n_trials,
                )
                break
            for run in _contiguous(sorted(batch)):
                overrides = [
                    fixed + [f"{k}={v if k in literal else format_value(v)}" for k, v in batch[i].items()] for i in run
                ]
                self.validate_batch_is_legal(overrides)
                returns = self.launcher.launch(overrides, initial_job_idx=run[0])
                for i, ret in zip(run, returns):
                    failures += self._record(loop, i, ret)
            self._write_results(loop, sweep_dir, plot=False)
            if self.max_failures is not None and failures > self.max_failures:
                raise RuntimeError(
                    f"{failures} trials failed (hydra.sweeper.max_failures={self.max_failures}); "
                    f"see the job logs under {sweep_dir}"
                )
        best = self._write_results(loop, sweep_dir)
        if best["best_trial"] is not None:
            log.info(
                "Best trial %d: %s=%.6g with %s",
                best["best_trial"],
                self.objective,
                best["best_evaluated_result"],
                best["best_evaluated_params"],
            )
        else:
            log.warning("No completed trial met the outcome constraints; results in %s", sweep_dir)
        return best

    def _record(self, loop: Any, i: int, ret: Any) -> int:
        """Tell Ax how job ``i`` went; 1 when it failed."""
        try:
            value = ret.return_value  # re-raises the job's exception when it failed
            hydra_cfg = getattr(ret, "hydra_cfg", None)
            out_dir = str(hydra_cfg.hydra.runtime.output_dir) if hydra_cfg is not None else None
            values = self._metrics(value, out_dir)
            needed = [self.objective] + [c.metric for c in self._constraints]
            missing = [m for m in needed if m not in values or not math.isfinite(_mean(values[m]))]
            if missing:
                raise ValueError(
                    f"metric(s) {missing} neither returned by the job nor found in its "
                    f"{self.metrics_file}; got {sorted(values)}"
                )
        except Exception as e:  # noqa: BLE001 - a failed job is a failed trial
            reason = f"{type(e).__name__}: {e}"
            loop.fail(i, reason)
            log.error("Trial %d failed: %s", i, reason)
            if i == loop.baseline_index:
                if isinstance(e, UserError):  # its config cannot run: neither can any trial's
                    raise UserError(f"the baseline arm (trial {i}) failed: {e}") from e
                raise RuntimeError(f"the baseline arm (trial {i}) failed: {reason}") from e
            return 1
        loop.tell(i, values)
        best = loop.best()
        log.info(
            "Trial %d%s: %s=%.6g; best %s",
            i,
            " (baseline)" if i == loop.baseline_index else "",
            self.objective,
            _mean(values[self.objective]),
            "none feasible yet" if best is None else f"{best.metrics[self.objective]:.6g} (trial {best.index})",
        )
        return 0

    def _write_results(self, loop: Any, sweep_dir: Path, plot: bool = True) -> dict[str, Any]:
        from mtrank.tuning.outcomes import thresholds
        from mtrank.tuning.report import (
            plot_trials,
            trial_table,
            write_text,
            write_yaml,
        )

        recs = loop.records()
        best = loop.best()
        base_i = loop.baseline_index
        results = {
            "name": "ax",
            "objective": self.objective,
            "minimize": self.minimize,
            "best_evaluated_params": None if best is None else best.params,
            "best_evaluated_result": None if best is None else best.metrics.get(self.objective),
            "best_trial": None if best is None else best.index,
            "best_is_baseline": None if best is None else best.is_baseline,
            "best_metrics": None if best is None else best.metrics,
            "note": None if best is not None else "no completed trial met the outcome constraints",
            "outcome_constraints": [str(c) for c in loop.constraints],
            "thresholds": thresholds(loop.constraints, loop.baseline_values())
            if loop.baseline_values() is not None or not any(c.relative for c in loop.constraints)
            else None,
            "baseline_params": None if base_i is None else next(r.params for r in recs if r.index == base_i),
            "baseline_metrics": loop.baseline_values(),
            "n_trials": {
                "budget": loop.n_trials,
                "finished": loop.n_finished,
                "completed": loop.n_completed,
                "failed": sum(r.status == "FAILED" for r in recs),
            },
            "state_file": str(loop.path) if loop.path else None,
        }
        write_yaml(sweep_dir / "optimization_results.yaml", results)
        write_text(sweep_dir / "trials.csv", trial_table(recs).write_csv())
        if plot and any(r.status == "COMPLETED" for r in recs):
            plot_trials(
                loop, sweep_dir / "trials.png", title=f"{'minimise' if self.minimize else 'maximise'} {self.objective}"
            )
        return results


def _observation(v: Any) -> float | tuple[float, float | None] | None:
    """A number, or a ``(mean, sem)`` pair of numbers (sem may be None: Ax infers the noise); None otherwise."""

    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if num(v):
        return float(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and num(v[0]) and (v[1] is None or num(v[1])):
        return float(v[0]), None if v[1] is None else float(v[1])
    return None


def _mean(v: Any) -> float:
    return float(v[0]) if isinstance(v, tuple) else float(v)


def _contiguous(indices: Sequence[int]) -> list[list[int]]:
    """``[3, 4, 7, 8, 9]`` → ``[[3, 4], [7, 8, 9]]``: each run is launched with its first index as job number."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
