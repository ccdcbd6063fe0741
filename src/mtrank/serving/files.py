"""An artifact's files: their names and format version, checksums, reading them, the exported network.

An artifact is a folder written by :func:`mtrank.serving.export.export_run` (``python src/export.py``)::

    manifest.json      format version, versions of the exporting stack, the source run's fingerprint, every
                       file's sha256 (checked when loaded), the tasks, heads, objective and per-head β
    network.pt2        the network as a torch.export program: (categorical int64 [B, C], numeric float32 [B, N])
                       -> logits [B, heads], batch size dynamic
    features.json      the raw columns a candidate row carries and how each is encoded (vocabulary file + OOV
                       index, numeric transform + train mean / std, the NaN policy), in the network's input order
    vocab/<col>.parquet  the vocabularies (value -> index; 0 is the out-of-vocabulary bucket)
    calibration.json   Eq. 3 per head (β_t) and the fitted post-hoc calibrators (:class:`mtrank.calibration.run_calibration.Calibration`)
    utility.json       the default utility weights w_t of Eq. 4
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

# the maths shared with training and evaluation (the same functions, so the probabilities are the same)

ARTIFACT_FORMAT = 1


MANIFEST_FILE = "manifest.json"


NETWORK_FILE = "network.pt2"


FEATURES_FILE = "features.json"


CALIBRATION_FILE = "calibration.json"


UTILITY_FILE = "utility.json"


class ArtifactError(RuntimeError):
    """The artifact folder is missing, incomplete, corrupted or of another format version."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(directory: Path, name: str) -> dict:
    path = directory / name
    if not directory.is_dir():
        raise ArtifactError(
            f"artifact folder {directory} does not exist (export one with `python src/export.py "
            "ckpt_path=<run folder>`)"
        )
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"artifact {directory} has no {name}: not an exported artifact, or an incomplete one"
        ) from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"artifact {directory}: {name} is not valid JSON ({exc})") from None


def resolve_device(name: str | None) -> str:
    if not name or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ArtifactError(f"device={name}: this machine has no CUDA device")
    return str(name)


def load_network(path: Path, device: torch.device) -> torch.nn.Module:
    with warnings.catch_warnings():
        # torch warns about parameters shared between modules when it reloads them; they load correctly
        warnings.filterwarnings("ignore", message=".*No complete tensor found.*")
        ep = torch.export.load(str(path))
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(ep, device)
    return ep.module()


def verify_files(directory: Path, manifest: dict) -> None:
    """Every file the manifest lists is there with the sha256 it recorded at export."""
    files = manifest.get("files") or {}
    if not files:
        raise ArtifactError(f"artifact {directory}: the manifest lists no files")
    for rel, digest in files.items():
        path = directory / rel
        if not path.is_file():
            raise ArtifactError(f"artifact {directory}: file {rel} is missing")
        if sha256_file(path) != digest:
            raise ArtifactError(
                f"artifact {directory}: file {rel} does not match the sha256 in "
                f"{MANIFEST_FILE} (changed or corrupted after export)"
            )
