"""Reading a checkpoint file named by a config key (``ckpt_path``), with errors that name the key and the file.

:func:`read_checkpoint` tells apart a missing file, an empty one (0 bytes), a file that is no PyTorch file at all
(a CSV, random bytes), a PyTorch file that holds Python objects (never unpickled: ``weights_only=True`` always; the
message never suggests loading it otherwise) and a PyTorch file that is no Lightning checkpoint.
:func:`check_fits` compares a checkpoint's weights with the model built from the config before Lightning restores
it (a checkpoint of a run with other tasks or features).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtrank.errors import InputFileError

__all__ = ["read_checkpoint", "check_fits"]

_ZIP, _PICKLE = b"PK", b"\x80"  # torch.save's zip container; the legacy pickle format (protocol ≥ 2)


def _torch_reason(exc: BaseException) -> str:
    """What torch says is wrong, without its advice to load the file with ``weights_only=False``."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = m.group(1) if m else text.splitlines()[0] if text.strip() else type(exc).__name__
    reason = re.split(r"(?i)\.?\s*(Please use|Check the documentation|Re-running|weights_only)", reason)[0]
    return reason.strip().rstrip(".") or type(exc).__name__


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors and plain values only), or an :class:`InputFileError` naming ``key``."""
    import torch

    p = Path(path)
    where = f"{key} = {p}"
    if not p.is_file():
        raise InputFileError(f"{where}: no such file")
    size = p.stat().st_size
    if size == 0:
        raise InputFileError(
            f"{where}: the file is empty (0 bytes), not a checkpoint; a run killed while writing "
            "it leaves such a file: use another checkpoint of the run (its checkpoints/ folder)"
        )
    with p.open("rb") as f:
        head = f.read(64)
    if not head.startswith((_ZIP, _PICKLE)):
        kind = (
            "a text file" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "a binary file of another format"
        )
        first = head.split(b"\n")[0][:40].decode("ascii", "replace")
        raise InputFileError(
            f"{where}: {kind}{f' (it starts with {first!r})' if kind == 'a text file' else ''}, "
            "not a checkpoint; give a .ckpt from a run's checkpoints/ folder or the run folder"
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, zip errors
        raise InputFileError(
            f"{where}: cannot be read as a checkpoint ({_torch_reason(exc)}); mtrank checkpoints "
            "hold tensors and plain values only, and a file holding other Python objects is not "
            "loaded (unpickling it could run code stored in it): give a checkpoint written by an "
            "mtrank run"
        ) from exc
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        keys = sorted(map(str, ckpt))[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputFileError(
            f"{where}: a PyTorch file but not a Lightning checkpoint of an mtrank run (it holds {keys}, no state_dict)"
        )
    return dict(ckpt)


def _names(xs: Any) -> str:
    return "[" + ", ".join(map(str, xs)) + "]"


def _spec(ckpt: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = (ckpt.get("hyper_parameters") or {}).get("spec")
    return spec if isinstance(spec, Mapping) else {}


def check_fits(path: str | Path, model: Any, key: str = "ckpt_path") -> None:
    """Raise :class:`InputFileError` when the checkpoint's weights do not fit ``model`` (another run's tasks,
    features or network), naming what differs."""
    p = Path(path)
    ckpt = read_checkpoint(p, key)
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if theirs == ours:
        return
    where = f"{key} = {p}"
    fix = f"resume with the config of the run that wrote it (its config.yaml), or start a new run without {key}"
    spec, ours_spec = _spec(ckpt), getattr(getattr(model, "spec", None), "tasks", None)
    their_tasks = list(spec.get("tasks") or [])
    if their_tasks and ours_spec is not None and their_tasks != list(ours_spec):
        raise InputFileError(
            f"{where}: the checkpoint is from a run with other tasks: it has {_names(their_tasks)}, "
            f"this config trains {_names(ours_spec)}; {fix}"
        )
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    shape = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    parts = [
        f"{len(v)} {what} (e.g. {v[0]})"
        for v, what in ((missing, "weights missing"), (extra, "unexpected weights"))
        if v
    ]
    if shape:
        parts.append(
            f"{len(shape)} weights of another shape; shapes differ: "
            + "; ".join(f"{k}: checkpoint {theirs[k]}, model {ours[k]}" for k in shape[:4])
        )
    raise InputFileError(
        f"{where}: its weights do not fit the model this config builds (other hyper-parameters, "
        f"features or network): {', '.join(parts)}; {fix}; nothing was written"
    )
