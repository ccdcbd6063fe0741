"""Which run ``ckpt_path=last`` resumes, and whether a resume is valid, decided before anything is written.

* :func:`select_run` (called by the ``hydra.run.dir`` resolver of ``src/train.py``, so before Hydra creates or
  writes into any folder) compares the composed config with each run's saved ``config.yaml``, leaving out what may
  change between a run and its resumption (:data:`IGNORED_ON_RESUME`, and every value that is a path of this
  machine or derived from one). It takes the one unfinished run (no ``metrics.json``) whose config matches; failing
  that, the one unfinished run that differs only in ``data.*`` (its data check then decides); otherwise it refuses
  with :class:`ResumeError`, listing every candidate (folder, time of ``last.ckpt``, finished or not, what differs)
  and how to pick one (``ckpt_path=<run>/checkpoints/last.ckpt``, which continues in a new folder).
* :func:`check_resume` (called by the training job once the data and the model are built, still before anything
  is written into the run folder) checks that the checkpoint's weights fit the model (every key and shape), that
  the config matches the run's, and that the data fingerprint (:mod:`mtrank.utils.run_info`) is the one the run
  recorded; a different one is refused unless ``resume_allow_data_change=true``.
* :func:`deferred_run_logs`: while the resume is checked, log records meant for the run folder's log file are held
  back (the file handler opens lazily, ``delay: true``), so a refused resume leaves the folder byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.errors import UserError
from mtrank.utils.checkpoint_files import check_fits

log = logging.getLogger(__name__)

LAST = "last.ckpt"
ALLOW_DATA_CHANGE_KEY = "resume_allow_data_change"
# may differ between a run and its resumption: where things are, how they are shown, the resume switches
IGNORED_ON_RESUME = (
    "hydra",
    "paths",
    "ckpt_path",
    ALLOW_DATA_CHANGE_KEY,
    "callbacks",
    "logger",
    "tags",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "data.num_workers",
    "data.pin_memory",
    "data.multiprocessing_context",
)
# values that name this machine's paths or this moment: dropped from the comparison wherever they are
VOLATILE = re.compile(r"\$\{(paths\.|hydra:|now:|oc\.env:)")
_PLACEHOLDER = "\x00volatile\x00"
SHOWN = 6  # differences listed per candidate


class ResumeError(UserError, RuntimeError):
    """A resume that would continue the wrong run, or one that cannot continue: nothing was written."""


# ---------------------------------------------------------------------------------------------- config comparison


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        if not node and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith((p + ".", p + "[")) for p in IGNORED_ON_RESUME)


def _mask(node: Any, path: str = "", ignored: bool = False) -> Any:
    """The unresolved config with every leaf of an ignored subtree and every volatile string replaced by a
    placeholder (the structure stays, so interpolations into it still resolve, to the placeholder)."""
    ignored = ignored or bool(path and _ignored(path))
    if isinstance(node, dict):
        return {k: _mask(v, f"{path}.{k}" if path else str(k), ignored) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v, f"{path}[{i}]", ignored) for i, v in enumerate(node)]
    if ignored or (isinstance(node, str) and VOLATILE.search(node)):
        return _PLACEHOLDER
    return node


def comparable(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The composed config as flat ``{key: resolved value}``, ignored and volatile values left out. Safe to call
    while ``hydra.run.dir`` is being resolved (nothing path-dependent is resolved)."""
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
    else:
        raw = dict(cfg)
    raw.pop("hydra", None)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(_mask(raw)), resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable value stays as written: it then differs, and is named
        resolved = OmegaConf.to_container(OmegaConf.create(_mask(raw)), resolve=False)
    # volatile values stay as markers, so that the same keys of a run's record are skipped too
    return {
        k: (_PLACEHOLDER if _PLACEHOLDER in repr(v) else v) for k, v in _flatten(resolved).items() if not _ignored(k)
    }


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``config.yaml`` (resolved at the time) as flat ``{key: value}``, or None without one."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return _flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))


def config_differences(now: Mapping[str, Any], run: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, the run's value, this command's value)`` for every compared key that differs (missing: ``<absent>``)."""
    out = []
    for key in sorted(set(now) | {k for k in run if not _ignored(k)}):
        if now.get(key) == _PLACEHOLDER:
            continue  # a path of this machine or a value derived from one
        a, b = run.get(key, "<absent>"), now.get(key, "<absent>")
        if a != b:
            out.append((key, a, b))
    return out


def _fmt(diffs: list[tuple[str, Any, Any]], n: int = SHOWN) -> str:
    shown = "; ".join(f"{k}: run {a!r}, now {b!r}" for k, a, b in diffs[:n])
    return shown + (f"; … {len(diffs) - n} more" if len(diffs) > n else "")


# ---------------------------------------------------------------------------------------------- run selection


@dataclass
class Candidate:
    run_dir: Path
    last: Path
    mtime: float
    finished: bool
    diffs: list[tuple[str, Any, Any]] = field(default_factory=list)
    no_config: bool = False

    @property
    def data_only(self) -> bool:
        return bool(self.diffs) and all(k.startswith("data.") for k, _, _ in self.diffs)

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.mtime))
        state = "finished (metrics.json)" if self.finished else "unfinished"
        if self.no_config:
            what = "no config.yaml to compare with"
        elif self.diffs:
            what = "differs: " + _fmt(self.diffs)
        else:
            what = "same config"
        return f"  {self.run_dir}  last.ckpt {when}, {state}, {what}"


def candidates(runs_dir: Path, now: Mapping[str, Any]) -> list[Candidate]:
    """Every run under ``runs_dir`` with a ``checkpoints/last.ckpt``, newest first, compared with ``now``."""
    out = []
    for last in Path(runs_dir).glob(f"*/checkpoints/{LAST}"):
        run_dir = last.parent.parent
        saved = saved_config(run_dir)
        c = Candidate(
            run_dir, last, last.stat().st_mtime, (run_dir / "metrics.json").is_file(), no_config=saved is None
        )
        if saved is not None:
            c.diffs = config_differences(now, saved)
        out.append(c)
    return sorted(out, key=lambda c: c.mtime, reverse=True)


def select_run(runs_dir: str | Path, cfg: DictConfig | Mapping[str, Any]) -> Path | None:
    """The run folder ``ckpt_path=last`` continues (see module doc); None when the task has no ``last.ckpt``.

    Raises :class:`ResumeError` when no run or more than one could be meant."""
    runs_dir = Path(runs_dir)
    found = candidates(runs_dir, comparable(cfg))
    if not found:
        return None
    same = [c for c in found if not c.diffs and not c.no_config]
    unfinished = [c for c in same if not c.finished]
    if len(unfinished) == 1:
        return unfinished[0].run_dir
    if not same:
        data_only = [c for c in found if c.data_only and not c.finished]
        if len(data_only) == 1:  # its data fingerprint is checked (and refused unless allowed) before it continues
            return data_only[0].run_dir
    if len(unfinished) > 1:
        why = f"{len(unfinished)} unfinished runs have this config"
    elif same:
        why = "the run(s) with this config have finished: there is nothing to resume"
    else:
        why = "no unfinished run has this config"
    raise ResumeError(
        f"ckpt_path=last: {why}, so no run is resumed and nothing was written. Runs of this task with a "
        f"last.ckpt under {runs_dir} (newest first):\n" + "\n".join(c.line() for c in found) + "\n"
        "Pick one with ckpt_path=<run folder>/checkpoints/last.ckpt (it continues in a new run folder, the old one "
        "is left as it is), rerun with the config of the run to resume, or drop ckpt_path to start afresh."
    )


def resume_run_dir(runs_dir: str, ckpt_path: Any, new_name: str, cfg: DictConfig | Mapping[str, Any] | None) -> str:
    """``hydra.run.dir`` of a training run: with ``ckpt_path=last`` the folder of the run it resumes (when the task
    has any ``last.ckpt``), otherwise a new folder ``<runs_dir>/<new_name>``."""
    if str(ckpt_path) == "last" and cfg is not None:
        chosen = select_run(runs_dir, cfg)
        if chosen is not None:
            return str(chosen)
    return str(Path(runs_dir) / new_name)


# ---------------------------------------------------------------------------------------------- resume checks


def _fingerprint(info: Mapping[str, Any] | None) -> dict[str, Any]:
    data = (info or {}).get("data") or {}
    fp = data.get("fingerprint") or {}
    return {"inputs": fp.get("inputs"), "processed_key": fp.get("processed_key", data.get("processed_key"))}


def data_fingerprint(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint :func:`mtrank.utils.run_info.write_run_info` records for processed data ``metadata``."""
    return {"inputs": (metadata.get("source") or {}).get("content_sha256"), "processed_key": metadata.get("key")}


def check_resume(
    cfg: DictConfig, run_dir: Path, ckpt_path: str | Path, model, data_metadata: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Check a resume into ``run_dir`` before anything is written there (see module doc).

    Returns the run's previous data fingerprint when it differs and ``resume_allow_data_change=true`` (to be
    recorded), else None; raises :class:`ResumeError` naming the folder, the keys and values otherwise."""
    check_fits(ckpt_path, model)
    saved = saved_config(run_dir)
    diffs = config_differences(comparable(cfg), saved) if saved is not None else []
    other = [d for d in diffs if not d[0].startswith("data.")]
    if other:
        raise ResumeError(
            f"cannot resume the run {run_dir}: this config differs from its config.yaml ({_fmt(other)}). Resuming "
            f"would continue that run with other settings; nothing was written. Rerun with the run's settings, or "
            f"continue from its checkpoint in a new folder with ckpt_path={ckpt_path}."
        )
    info_path = run_dir / "run_info.json"
    before = _fingerprint(json.loads(info_path.read_text())) if info_path.is_file() else None
    now = data_fingerprint(data_metadata)
    if before is None or before == now:
        return None
    data_diffs = [d for d in diffs if d[0].startswith("data.")]
    where = f" (data config: {_fmt(data_diffs)})" if data_diffs else ""
    if not bool(cfg.get(ALLOW_DATA_CHANGE_KEY, False)):
        raise ResumeError(
            f"cannot resume the run {run_dir} on other data{where}: its run_info.json records the data fingerprint "
            f"inputs={before['inputs']} processed_key={before['processed_key']}, this config gives "
            f"inputs={now['inputs']} processed_key={now['processed_key']}. Nothing was written. To continue its "
            f"training on the new data anyway, add {ALLOW_DATA_CHANGE_KEY}=true."
        )
    log.warning(
        "Resuming %s on other data (%s=true)%s: fingerprint %s → %s", run_dir, ALLOW_DATA_CHANGE_KEY, where, before, now
    )
    return before


# ---------------------------------------------------------------------------------------------- deferred writes


@contextlib.contextmanager
def deferred_run_logs(run_dir: Path | str) -> Iterator[None]:
    """Hold back log records bound for files inside ``run_dir`` until the block succeeds; on an error they are
    dropped (the console still shows them) and the file handlers stay detached, so nothing reaches the folder."""
    root = logging.getLogger()
    run_dir = Path(run_dir).resolve()
    handlers = [
        h
        for h in root.handlers
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().is_relative_to(run_dir)
    ]
    if not handlers:
        yield
        return
    held: list[logging.LogRecord] = []

    class _Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    hold = _Hold(level=min(h.level for h in handlers))
    for h in handlers:
        root.removeHandler(h)
    root.addHandler(hold)
    try:
        yield
    except BaseException:
        root.removeHandler(hold)
        for h in handlers:
            h.close()
        raise
    root.removeHandler(hold)
    for h in handlers:
        root.addHandler(h)
        for record in held:
            if record.levelno >= h.level:
                h.handle(record)
