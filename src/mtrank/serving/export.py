"""Export a trained run to a self-contained serving artifact (``python src/export.py``; folder layout in
:mod:`mtrank.serving.artifact`).

This side does import the training stack (it loads the checkpoint as a ``RankingModule``); the artifact it writes
is read by :mod:`mtrank.serving.artifact` without it.

Why ``torch.export`` for the network: ``torch.jit.script`` is deprecated in the torch this project pins and cannot
script these networks (they take a mapping of tensors); ``torch.export`` captures the whole forward as one graph
of ATen operators with a dynamic batch dimension, saved as a ``.pt2`` archive that loads without mtrank's model
code, runs on CPU as it is and on CUDA after ``move_to_device_pass`` (same file), and is the input of AOTInductor
(``torch._inductor.aoti_compile_and_package``) for a compiled C++ runtime; ONNX would add ONNX Runtime as a
dependency for a network whose CPU forward for 500 candidates already takes about a millisecond.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# what the export reads of a trained run: the run loader of src/eval.py and src/predict.py
from mtrank.scoring.run import LoadedRun, load_run
from mtrank.serving.artifact import RankingArtifact
from mtrank.serving.files import (
    ARTIFACT_FORMAT,
    CALIBRATION_FILE,
    FEATURES_FILE,
    MANIFEST_FILE,
    NETWORK_FILE,
    UTILITY_FILE,
    ArtifactError,
    load_network,
    sha256_file,
)

log = logging.getLogger(__name__)

__all__ = ["ARTIFACT_DIR", "ExportCheckError", "export_run"]

ARTIFACT_DIR = "artifact"  # default output: <run folder>/artifact
_EXPORT_CHECK_ROWS = 257
_EXPORT_CHECK_ATOL = 1e-5


class ExportCheckError(RuntimeError):
    """The exported network or the artifact does not reproduce the run's own scores."""


class _Inputs(torch.nn.Module):
    """The network with positional tensor inputs (what torch.export captures)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return self.net({"categorical": categorical, "numeric": numeric})


def _example_inputs(run: LoadedRun, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    spec = run.spec
    cat = (
        torch.stack([torch.randint(0, c.cardinality, (rows,), generator=g) for c in spec.categorical], dim=1)
        if spec.categorical
        else torch.zeros((rows, 0), dtype=torch.int64)
    )
    num = torch.randn((rows, len(spec.numeric)), generator=g) if spec.numeric else torch.zeros((rows, 0))
    return cat, num


def export_network(run: LoadedRun, path: Path) -> None:
    """Export ``run.model.net`` with a dynamic batch dimension, save it to ``path`` and check that the saved
    program gives the eager network's logits."""
    net = run.model.net.to("cpu").eval()
    for module in net.modules():  # buffers that are views of one tensor (triu_indices rows) get their own storage,
        for name, buf in list(module._buffers.items()):  # which torch.export's archive writer expects
            if buf is not None:
                module._buffers[name] = buf.clone()
    wrapper = _Inputs(net).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    example = _example_inputs(run, 8)
    with torch.no_grad():
        program = torch.export.export(
            wrapper, example, dynamic_shapes={"categorical": {0: batch}, "numeric": {0: batch}}, strict=False
        )
    torch.export.save(program, str(path))
    loaded = load_network(path, torch.device("cpu"))
    cat, num = _example_inputs(run, _EXPORT_CHECK_ROWS, seed=1)
    with torch.inference_mode():
        want, got = wrapper(cat, num), loaded(cat, num)
    diff = float((want - got).abs().max())
    if not diff <= _EXPORT_CHECK_ATOL:
        raise ExportCheckError(
            f"the exported network's logits differ from the checkpoint's by {diff:.3g} "
            f"(> {_EXPORT_CHECK_ATOL}) on {_EXPORT_CHECK_ROWS} random rows"
        )


def _utility_weights(weights: Mapping[str, Any] | None, tasks: list[str]) -> dict[str, float]:
    if weights is None:
        raise ValueError(
            f"utility weights are needed: pass utility=<name> (conf/utility/) or weights={{...}} "
            f"naming the run's tasks {tasks}"
        )
    weights = {str(k): v for k, v in dict(weights).items()}
    unknown = sorted(set(weights) - set(tasks))
    missing = [t for t in tasks if t not in weights]
    if unknown or missing:
        raise ValueError(
            f"utility.weights name {sorted(weights)} but the run's tasks are {tasks}"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
            + " (six-task runs: utility=related_products_ext; or weights={task: weight, ...})"
        )
    out = {}
    for t in tasks:
        v = weights[t]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not float(v) == float(v)
            or abs(float(v)) == float("inf")
        ):
            raise ValueError(f"utility.weights.{t} = {v!r}: a finite number is expected")
        out[t] = float(v)
    return out


def _versions() -> dict[str, str]:
    from importlib import metadata

    import mtrank

    out = {"python": platform.python_version(), "platform": platform.platform(), "mtrank": mtrank.__version__}
    for pkg in ("torch", "polars", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:  # pragma: no cover - always installed with mtrank
            pass
    return out


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _source(run: LoadedRun) -> dict[str, Any]:
    info_path = run.run_dir / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    cfg_path = run.run_dir / "config.yaml"
    data = info.get("data") or {}
    return {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.ckpt_path),
        "checkpoint_sha256": sha256_file(run.ckpt_path),
        "config_sha256": sha256_file(cfg_path) if cfg_path.is_file() else None,
        "data_fingerprint": data.get("fingerprint"),
        "processed_key": (run.preprocessing.metadata.get("key") if run.preprocessing is not None else None)
        or data.get("processed_key"),
        "trained_with": info.get("versions"),
        "calibration": {"method": run.calibration.method, "fitted_on": run.calibration.info.get("fitted_on")},
    }


def _features(run: LoadedRun) -> dict[str, Any]:
    if run.preprocessing is None:
        raise FileNotFoundError(
            f"run {run.run_dir} has no preprocessing metadata (preprocessing/metadata.json, or the "
            "processed data named in run_info.json): the encoders cannot be exported"
        )
    meta = run.preprocessing.metadata
    enc = run.encoder()
    spec = run.spec
    expected_cat = [c.name for c in spec.categorical]
    expected_num = list(spec.numeric)
    if sorted(expected_cat) != sorted(enc.categorical) or sorted(expected_num) != sorted(enc.numeric_all):
        raise ArtifactError(
            f"run {run.run_dir}: the model's features {expected_cat + expected_num} are not those of its "
            f"preprocessing {enc.categorical + enc.numeric_all}"
        )
    cfg = meta.get("config") or {}
    cols = cfg.get("columns") or {}
    return {
        "encoding": meta["features"],
        "model_inputs": {"categorical": expected_cat, "numeric": expected_num},
        "nan_policy": (cfg.get("encoding") or {}).get("nan_policy", "fill_mean"),
        "request_id": cols.get("request_id"),
        "item_id": cols.get("item_id"),
        # accepted in a candidate row and not used (the logs carry it)
        "ignored": [c for c in [cols.get("time")] if c],
        "side_tables": [t.get("key") for t in (meta.get("side_tables") or []) if isinstance(t, Mapping)],
    }


def export_run(
    run: str | Path | LoadedRun,
    output: str | Path | None = None,
    *,
    weights: Mapping[str, Any] | None = None,
    utility_name: str | None = None,
    calibration: str | Path | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the serving artifact of ``run`` (a run folder, a checkpoint, or a loaded run) to ``output`` (default
    ``<run folder>/artifact``) and return its path.

    The folder is built beside ``output`` under a temporary name, loaded back and checked against the run's own
    scoring on random rows, and only then renamed onto ``output`` (an existing artifact there is replaced).
    ``weights``: the default utility weights, one per task; ``calibration``: a calibration JSON replacing the
    run's ``calibration.json``.
    """
    if not isinstance(run, LoadedRun):
        run = load_run(run, calibration=calibration)
    elif calibration is not None:
        raise ValueError("give calibration= with a run folder, not with a loaded run")
    tasks = list(run.tasks)
    w = _utility_weights(weights, tasks)
    out = Path(output).expanduser() if output else run.run_dir / ARTIFACT_DIR
    if out.exists() and not overwrite:
        raise FileExistsError(f"output={out} exists (pass overwrite=true to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        features = _features(run)
        for f in features["encoding"]["categorical"]:
            dst = tmp / f["vocab_file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.preprocessing.directory / f["vocab_file"], dst)
        (tmp / FEATURES_FILE).write_text(json.dumps(features, indent=2))
        export_network(run, tmp / NETWORK_FILE)
        run.calibration.save(tmp / CALIBRATION_FILE)
        (tmp / UTILITY_FILE).write_text(json.dumps({"weights": w, "source": utility_name}, indent=2))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format_version": ARTIFACT_FORMAT,
            "artifact_id": _sha256_text(json.dumps(files, sort_keys=True))[:16],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tasks": tasks,
            "heads": list(run.model.heads),
            "objective": run.model.objective.name,
            "head_betas": [float(b) for b in run.model.head_betas.tolist()],
            "network": {
                "file": NETWORK_FILE,
                "format": "torch.export",
                "inputs": ["categorical int64 [B, C]", "numeric float32 [B, N]"],
                "output": f"logits float32 [B, {len(run.model.heads)}]",
            },
            "versions": _versions(),
            "source": _source(run),
            "files": files,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        _check_artifact(run, tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Exported %s (checkpoint %s) to %s", run.run_dir, run.ckpt_path, out)
    return out


def _check_artifact(run: LoadedRun, directory: Path) -> None:
    """The artifact, loaded as a server loads it, gives the run's calibrated probabilities on random encoded rows."""
    art = RankingArtifact(directory)
    cat, num = _example_inputs(run, _EXPORT_CHECK_ROWS, seed=2)
    got, _ = art._probabilities(cat, num)
    model = run.model.to("cpu").eval()
    with torch.inference_mode():
        want = model.calibrated_probabilities(model({"categorical": cat, "numeric": num})).numpy()
    diff = float(abs(want - got).max())
    if not diff <= _EXPORT_CHECK_ATOL:
        raise ExportCheckError(
            f"the artifact's probabilities differ from the run's by {diff:.3g} (> {_EXPORT_CHECK_ATOL})"
        )
