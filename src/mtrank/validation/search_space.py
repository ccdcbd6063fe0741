"""Checks of the Ax sweeper's search space (``hydra.sweeper`` of ``conf/hparams_search/*.yaml``).

The parameters are parsed by the sweeper's own :func:`~mtrank.tuning.sweep_syntax.parse_param`
and built into :mod:`mtrank.tuning.space` objects, whose constructors check bounds (finite, low < high, log
scale > 0), choices (non-empty) and the sum constraint; this module adds what they cannot see: that each
parameter names an existing config key, integer ranges with whole-number bounds, parameter constraints over
declared parameters only, outcome constraints and the objective on metrics the jobs report, and a baseline arm
inside the space. Each problem names its key under ``hydra.sweeper``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.errors import Problems, fmt_list, suggest
from mtrank.utils.config import plain

__all__ = ["AX_SWEEPER_TARGET", "ax_sweeper_config", "check_ax_sweeper", "config_keys"]

AX_SWEEPER_TARGET = "hydra_plugins.mtrank_ax_sweeper.ax_sweeper.AxSweeper"
_NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][\w./@:-]*")
_MISSING = object()


def ax_sweeper_config(cfg: DictConfig) -> DictConfig | None:
    """``hydra.sweeper`` when it is mtrank's Ax sweeper: from the config itself (composed with its hydra node) or
    from the running Hydra job; None otherwise."""
    node = None
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        node = cfg.hydra
    else:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            node = HydraConfig.get()
    sweeper = node.get("sweeper") if node is not None else None
    if sweeper is None or str(sweeper.get("_target_", "")) != AX_SWEEPER_TARGET:
        return None
    return sweeper


def config_keys(cfg: DictConfig) -> list[str]:
    """Every leaf key of ``cfg`` (``hydra`` left out), dotted."""
    out: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if prefix == "" and k == "hydra":
                    continue
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out.append(prefix)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve: the key exists
        return None


def _hparams_search_choice(cfg: DictConfig) -> str | None:
    """The ``hparams_search`` option the config was composed with, when known."""
    try:
        choice = OmegaConf.select(cfg, "hydra.runtime.choices.hparams_search", default=None)
        if choice is None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.initialized():
                choice = HydraConfig.get().runtime.choices.get("hparams_search")
        return None if choice is None else str(choice)
    except Exception:  # noqa: BLE001
        return None


def _is_whole(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and float(x).is_integer()


def _choice_problem(values: Sequence[Any]) -> str | None:
    kinds = {bool if isinstance(v, bool) else (float if isinstance(v, (int, float)) else type(v)) for v in values}
    if len(kinds) > 1:
        return f"values {list(values)} mix types; give all numbers, all strings or all booleans"
    return None


def check_ax_sweeper(
    cfg: DictConfig,
    sweeper: DictConfig,
    problems: Problems,
    metrics: Collection[str],
    describe_metrics: str,
) -> list[str]:
    """Check ``hydra.sweeper`` of an Ax sweep of ``cfg``; returns the search parameters' names.

    ``metrics``: the metrics the jobs report (``describe_metrics`` describes them for messages).
    """
    from mtrank.tuning.generation import GenerationConfig
    from mtrank.tuning.outcomes import OutcomeConstraint
    from mtrank.tuning.space import Choice, Range, SearchSpace, SumConstraint
    from mtrank.tuning.sweep_syntax import parse_param

    base = "hydra.sweeper"
    try:
        sw = plain(sweeper)
    except Exception as exc:  # noqa: BLE001
        problems.add(base, f"{base} does not resolve: {exc}")
        return []

    names = [str(n) for n in (sw.get("params") or {})]
    if names and all(_select(cfg, n) is _MISSING for n in names):
        choice = _hparams_search_choice(cfg)
        problems.add(
            "hparams_search",
            f"{'hparams_search=' + choice if choice else base + '.params'}: none of its "
            f"search parameters {fmt_list(names)} is a key of this config: it is made for "
            f"another entry point (hparams_search=ax_multitask: src/train.py, "
            f"hparams_search=ax_utility: src/tune_utility.py)",
        )
        return []

    objective = sw.get("objective")
    if not objective:
        problems.add(
            f"{base}.objective",
            f"{base}.objective is empty: name the metric the jobs report; allowed: {describe_metrics}",
        )
    elif str(objective) not in metrics:
        problems.add(
            f"{base}.objective",
            f"{base}.objective = '{objective}' is never reported by the jobs; allowed: "
            f"{describe_metrics}{suggest(objective, metrics)}",
        )
    for k, low in (("n_trials", 0), ("batch_size", 1)):
        v = sw.get(k)
        if v is not None and (not _is_whole(v) or v < low):
            problems.add(f"{base}.{k}", f"{base}.{k} = {v!r}: expected an integer ≥ {low}")

    # ---------------------------------------------------------------- parameters
    params: dict[str, Any] = {}
    known = None
    for name, spec in (sw.get("params") or {}).items():
        key = f"{base}.params.{name}"
        name = str(name)
        if _select(cfg, name) is _MISSING:
            known = known if known is not None else config_keys(cfg)
            problems.add(
                key,
                f"{key}: the config has no key '{name}'; a search parameter must name an existing "
                f"config key (e.g. model.optimizer.lr){suggest(name, known, cutoff=0.85)}",
            )
            continue
        try:
            p = parse_param(name, spec)
        except Exception as exc:  # noqa: BLE001 - Hydra's grammar errors and the space's own checks
            problems.add(
                key,
                f"{key} = {spec!r}: {_clean(exc)}; expected interval(low, high) with low < high, "
                "int(interval(a, b)), tag(log, interval(a, b)) with a > 0, range(a, b) or "
                "choice(v1, v2, ...)",
            )
            continue
        if p is None:
            continue  # a fixed value passed to every job
        if isinstance(p, Range) and p.kind == "int" and not (_is_whole(p.low) and _is_whole(p.high)):
            problems.add(
                key, f"{key} = {spec!r}: an integer parameter needs whole-number bounds, got [{p.low}, {p.high}]"
            )
            continue
        if isinstance(p, Choice):
            why = _choice_problem(p.values)
            if why:
                problems.add(key, f"{key} = {spec!r}: {why}")
                continue
        params[name] = p
    declared = list(params)

    # ---------------------------------------------------------------- sum constraint
    sc = None
    sc_cfg = sw.get("sum_constraint")
    if sc_cfg:
        key = f"{base}.sum_constraint"
        names = [str(n) for n in (sc_cfg.get("params") or [])]
        undeclared = [n for n in names if n not in params]
        if undeclared:
            problems.add(
                f"{key}.params",
                f"{key}.params names {undeclared}, which are not search parameters; parameters: {fmt_list(declared)}",
            )
        else:
            try:
                sc = SumConstraint(tuple(names), float(sc_cfg["total"]), str(sc_cfg.get("derived") or names[-1]))
                SearchSpace(tuple(params.values()), sc)
            except Exception as exc:  # noqa: BLE001
                problems.add(key, f"{key}: {_clean(exc)}")
                sc = None
    derived = sc.derived if sc is not None else None

    # ---------------------------------------------------------------- parameter constraints
    for i, expr in enumerate(sw.get("parameter_constraints") or []):
        key = f"{base}.parameter_constraints[{i}]"
        text = str(expr)
        if text.count("<=") + text.count(">=") != 1:
            problems.add(key, f"{key} = '{text}': expected one linear inequality with <= or >=, e.g. 'a + b <= 0.9'")
            continue
        names = _NAME.findall(_NUMBER.sub(" ", text))
        unknown = [n for n in names if n not in params]
        if unknown:
            problems.add(
                key,
                f"{key} = '{text}' references {unknown}, which are not search parameters; "
                f"parameters: {fmt_list(declared)}",
            )
        elif derived in names:
            problems.add(
                key,
                f"{key} = '{text}' references the derived parameter {derived} (sum_constraint); "
                "write it in terms of the other parameters",
            )

    # ---------------------------------------------------------------- outcome constraints
    seen: dict[tuple[str, str], str] = {}
    for i, text in enumerate(sw.get("outcome_constraints") or []):
        key = f"{base}.outcome_constraints[{i}]"
        try:
            c = OutcomeConstraint.parse(str(text))
        except ValueError as exc:
            problems.add(key, f"{key}: {exc}")
            continue
        if (c.metric, c.op) in seen:
            problems.add(
                key,
                f"{key} = '{text}' bounds {c.metric} from the same side as {seen[(c.metric, c.op)]}: keep one of them",
            )
            continue
        seen[(c.metric, c.op)] = f"{key} = '{text}'"
        if c.metric not in metrics:
            problems.add(
                key,
                f"{key} = '{text}': metric '{c.metric}' is never reported by the jobs; allowed: "
                f"{describe_metrics}{suggest(c.metric, metrics)}",
            )

    # ---------------------------------------------------------------- generation
    try:
        GenerationConfig.from_mapping(sw.get("generation") or {})
    except (ValueError, TypeError) as exc:
        problems.add(f"{base}.generation", f"{base}.generation: {_clean(exc)}")

    # ---------------------------------------------------------------- the baseline arm
    if not problems.has(f"{base}.params") and not problems.has(f"{base}.sum_constraint") and params:
        _check_baseline(cfg, sw.get("baseline", "config"), SearchSpace(tuple(params.values()), sc), problems)
    return declared


def _check_baseline(cfg: DictConfig, baseline: Any, space: Any, problems: Problems) -> None:
    key = "hydra.sweeper.baseline"
    if baseline is None or baseline is False:
        return
    if isinstance(baseline, Mapping):
        values = {str(k): v for k, v in baseline.items()}
        unknown = [k for k in values if k not in space.names]
        if unknown:
            problems.add(
                key, f"{key} names {unknown}, which are not search parameters; parameters: {fmt_list(space.names)}"
            )
            return
        where = f"{key}: the values of"
    elif baseline == "config":
        values = {n: _select(cfg, n) for n in space.free_names}
        where = f"{key}=config: the config's values of"
    else:
        problems.add(key, f"{key} = {baseline!r}: expected 'config', a mapping {{parameter: value}} or null")
        return
    missing = [n for n in space.free_names if values.get(n) is None]
    if missing:
        problems.add(
            key, f"{key}: no baseline value for {missing}; set {key} to a mapping with every parameter, or to null"
        )
        return
    try:
        full = space.complete(values)
    except (KeyError, ValueError) as exc:
        problems.add(key, f"{key}: {_clean(exc)}")
        return
    bad = space.check(full)
    for prm in space.params:  # check()'s absolute tolerance is wide for a log range near 0 (1e-7 .. 1e-3)
        v = full.get(prm.name)
        if (
            getattr(prm, "log", False)
            and isinstance(v, (int, float))
            and not any(b.startswith(prm.name + "=") for b in bad)
            and not prm.low * (1 - 1e-9) <= float(v) <= prm.high * (1 + 1e-9)
        ):
            bad.append(f"{prm.name}={v} outside [{prm.low}, {prm.high}] (log scale)")
    if bad:
        problems.add(
            key,
            f"{where} the swept parameters lie outside the search space ({'; '.join(bad)}); "
            f"set {key} to values inside it (a mapping) or to null",
        )


def _clean(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
