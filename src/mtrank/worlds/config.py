"""The typed config of a world fitted to a real log (``conf/world/kuairand_fitted.yaml``), every key checked under
its full name (``world.requests.history_fraction``) before anything is read or fitted."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mtrank.errors import Problems, fmt_list
from mtrank.utils.config_fields import check_task_map, is_number, is_whole, unknown_keys

__all__ = ["WORLD_KINDS", "FittedWorldConfig", "world_kind"]

WORLD_KINDS = ("simulated", "fitted")

_SECTIONS: dict[str, tuple[str, ...]] = {
    "source": ("log", "tables", "user", "item", "time", "context", "item_columns"),
    "response": ("experiment", "overrides", "eval_overrides", "world_overrides", "tasks"),
    "requests": ("candidates_per_request", "history_fraction", "retrieval_noise"),
    "log": ("n_requests", "n_files", "seed"),
}
_TOP = ("kind", "name", "data_config", "cache_dir", "position_bias", *_SECTIONS)


def world_kind(mapping: Mapping[str, Any] | None, key: str = "world") -> str:
    """``simulated`` (also for no world node: the built-in default) or ``fitted``; anything else is a ConfigError."""
    kind = "simulated" if not mapping else str(mapping.get("kind", ""))
    if kind not in WORLD_KINDS:
        problems = Problems()
        problems.add(f"{key}.kind", f"{key}.kind = {kind!r}: expected one of {fmt_list(WORLD_KINDS)}")
        problems.raise_if_any(key)
    return kind


def _strings(problems: Problems, key: str, value: Any, *, nonempty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or any(not isinstance(v, str) for v in value):
        problems.add(key, f"{key} = {value!r}: expected a list of strings")
        return ()
    if nonempty and not value:
        problems.add(key, f"{key} is empty: expected at least one entry")
    return tuple(value)


def _string(problems: Problems, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        problems.add(key, f"{key} = {value!r}: expected a non-empty string")
        return ""
    return value


@dataclass(frozen=True)
class FittedWorldConfig:
    """A world whose users, items and contexts are those of a real log and whose truth is a fitted, frozen model."""

    name: str
    data_config: str
    cache_dir: str
    log_file: str
    tables: tuple[str, ...]
    user: str
    item: str
    time: str
    context: tuple[str, ...]
    item_columns: tuple[str, ...]
    experiment: str
    overrides: tuple[str, ...]
    eval_overrides: tuple[str, ...]
    world_overrides: tuple[str, ...]
    tasks: tuple[str, ...]
    position_bias: dict[str, float]
    candidates_per_request: int
    history_fraction: float
    retrieval_noise: float
    n_requests: int
    n_files: int
    log_seed: int

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "world") -> FittedWorldConfig:
        """Check every key (all problems at once, one :class:`~mtrank.errors.ConfigError`) and build the config."""
        p = Problems()
        if not isinstance(m, Mapping):
            p.add(key, f"{key} = {m!r}: expected a mapping (conf/world/<name>.yaml)")
            p.raise_if_any(key)
        unknown_keys(p, key, m, _TOP)
        if str(m.get("kind")) != "fitted":
            p.add(f"{key}.kind", f"{key}.kind = {m.get('kind')!r}: a fitted world needs kind: fitted")
        sec: dict[str, Mapping[str, Any]] = {}
        for name, allowed in _SECTIONS.items():
            node = m.get(name)
            if not isinstance(node, Mapping):
                p.add(f"{key}.{name}", f"{key}.{name} = {node!r}: expected a mapping with keys {fmt_list(allowed)}")
                node = {}
            unknown_keys(p, f"{key}.{name}", node, allowed)
            for k in allowed:
                if k not in node and node:
                    p.add(f"{key}.{name}.{k}", f"{key}.{name}.{k} is missing")
            sec[name] = node
        src, rsp, req, lg = sec["source"], sec["response"], sec["requests"], sec["log"]
        tasks = _strings(p, f"{key}.response.tasks", rsp.get("tasks", ()), nonempty=True)
        check_task_map(p, f"{key}.position_bias", m.get("position_bias"), tasks, exact=True)
        bias = m.get("position_bias") if isinstance(m.get("position_bias"), Mapping) else {}
        for t, b in bias.items():
            if is_number(b) and float(b) < 0:
                p.add(f"{key}.position_bias.{t}", f"{key}.position_bias.{t} = {b}: expected a number >= 0")
        k = req.get("candidates_per_request")
        if not is_whole(k) or k < 1:
            p.add(
                f"{key}.requests.candidates_per_request",
                f"{key}.requests.candidates_per_request = {k!r}: expected a whole number >= 1",
            )
        hf = req.get("history_fraction")
        if not is_number(hf) or not 0.0 <= float(hf) <= 1.0:
            p.add(
                f"{key}.requests.history_fraction",
                f"{key}.requests.history_fraction = {hf!r}: expected a number in [0, 1]",
            )
        rn = req.get("retrieval_noise")
        if not is_number(rn) or float(rn) < 0:
            p.add(f"{key}.requests.retrieval_noise", f"{key}.requests.retrieval_noise = {rn!r}: expected a number >= 0")
        for name in ("n_requests", "n_files"):
            v = lg.get(name)
            if not is_whole(v) or v < 1:
                p.add(f"{key}.log.{name}", f"{key}.log.{name} = {v!r}: expected a whole number >= 1")
        if not is_whole(lg.get("seed")):
            p.add(f"{key}.log.seed", f"{key}.log.seed = {lg.get('seed')!r}: expected a whole number")
        cfg_values = dict(
            name=_string(p, f"{key}.name", m.get("name")),
            data_config=_string(p, f"{key}.data_config", m.get("data_config")),
            cache_dir=_string(p, f"{key}.cache_dir", m.get("cache_dir")),
            log_file=_string(p, f"{key}.source.log", src.get("log")),
            tables=_strings(p, f"{key}.source.tables", src.get("tables", ())),
            user=_string(p, f"{key}.source.user", src.get("user")),
            item=_string(p, f"{key}.source.item", src.get("item")),
            time=_string(p, f"{key}.source.time", src.get("time")),
            context=_strings(p, f"{key}.source.context", src.get("context", ())),
            item_columns=_strings(p, f"{key}.source.item_columns", src.get("item_columns", ())),
            experiment=_string(p, f"{key}.response.experiment", rsp.get("experiment")),
            overrides=_strings(p, f"{key}.response.overrides", rsp.get("overrides", ())),
            eval_overrides=_strings(p, f"{key}.response.eval_overrides", rsp.get("eval_overrides", ())),
            world_overrides=_strings(p, f"{key}.response.world_overrides", rsp.get("world_overrides", ())),
        )
        p.raise_if_any(key)
        return cls(
            **cfg_values,
            tasks=tasks,
            position_bias={t: float(bias[t]) for t in tasks},
            candidates_per_request=int(k),
            history_fraction=float(hf),
            retrieval_noise=float(rn),
            n_requests=int(lg["n_requests"]),
            n_files=int(lg["n_files"]),
            log_seed=int(lg["seed"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v, tuple) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }

    def digest(self, *fields: str) -> str:
        """A short hash of the named fields (all when none): the part of a cache key that comes from the config."""
        d = self.to_dict()
        payload = {k: d[k] for k in (fields or d)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
