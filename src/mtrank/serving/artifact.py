"""Load an exported ranking artifact and rank raw candidate rows with it.

This is the serving side: it imports torch, numpy, Polars and mtrank's encoding / calibration / utility maths, and
nothing of training (no Lightning, no Hydra, no model classes: the network is a ``torch.export`` program).

The artifact's folder is described in :mod:`mtrank.serving.files`.

Public API: :func:`load_artifact` / :class:`RankingArtifact` (``rank``, ``rank_many``, ``score``), :class:`Ranking`,
:class:`RequestError` (a bad request, naming the field; :mod:`mtrank.serving.results`) and
:class:`ArtifactError` (a broken artifact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

# the maths shared with training and evaluation (the same functions, so the probabilities are the same)
from mtrank.calibration.downsampling import correct_logits
from mtrank.calibration.run_calibration import Calibration
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.spec import CAT_PREFIX, NUM_PREFIX
from mtrank.serving.columns import Column, series_from_frame, series_from_values
from mtrank.serving.files import (
    ARTIFACT_FORMAT,
    CALIBRATION_FILE,
    FEATURES_FILE,
    MANIFEST_FILE,
    NETWORK_FILE,
    UTILITY_FILE,
    ArtifactError,
    load_network,
    read_json,
    resolve_device,
    verify_files,
)
from mtrank.serving.results import MISSING, Ranking, RequestError, is_finite, request_error
from mtrank.utility.objectives import utility_scores


class RankingArtifact:
    """An exported run, ready to rank raw candidate rows (see the module docstring for the folder).

    Args:
        directory: the artifact folder.
        device: ``cpu`` (default), ``cuda`` / ``cuda:<i>`` or ``auto``.
        verify: check every file against the sha256 recorded in the manifest (a few ms).
    """

    def __init__(self, directory: str | Path, *, device: str = "cpu", verify: bool = True) -> None:
        self.directory = Path(directory).expanduser()
        self.manifest = read_json(self.directory, MANIFEST_FILE)
        fmt = self.manifest.get("format_version")
        if fmt != ARTIFACT_FORMAT:
            raise ArtifactError(f"artifact {self.directory}: format_version {fmt}, this mtrank reads {ARTIFACT_FORMAT}")
        if verify:
            verify_files(self.directory, self.manifest)
        try:
            self._load(device)
        except (KeyError, TypeError, IndexError) as exc:
            raise ArtifactError(
                f"artifact {self.directory} is malformed ({type(exc).__name__}: {exc}); export it "
                "again with `python src/export.py`"
            ) from exc

    def _load(self, device: str) -> None:
        m = self.manifest
        self.tasks: list[str] = list(m["tasks"])
        self.heads: list[str] = list(m["heads"])
        self.objective: str = m["objective"]
        features = read_json(self.directory, FEATURES_FILE)
        self.nan_policy: str = features.get("nan_policy", "fill_mean")
        self.request_id_column: str | None = features.get("request_id")
        self.item_id_column: str | None = features.get("item_id")
        self.ignored_columns: list[str] = list(features.get("ignored", []))
        self.encoder = FeatureEncoder.load(self.directory, features["encoding"])
        self.columns: list[Column] = [
            Column(c, "categorical", str(self.encoder.dtypes[c])) for c in self.encoder.categorical
        ] + [Column(c, "numeric", "Float64") for c in self.encoder.numeric_all]
        self._known = {c.name for c in self.columns} | {c for c in (self.request_id_column, self.item_id_column) if c}
        self._known |= set(self.ignored_columns)
        self._cat_inputs = [CAT_PREFIX + c for c in features["model_inputs"]["categorical"]]
        self._num_inputs = [NUM_PREFIX + c for c in features["model_inputs"]["numeric"]]
        self._exprs = self.encoder.expressions()
        self.calibration = Calibration.load(self.directory / CALIBRATION_FILE)
        if list(self.calibration.tasks) != self.tasks:
            raise ArtifactError(f"artifact {self.directory}: calibration tasks {self.calibration.tasks} ≠ {self.tasks}")
        utility = read_json(self.directory, UTILITY_FILE)
        self.default_weights = self._weights(
            utility["weights"], ("utility.json", "weights"), partial=False, error=ArtifactError
        )
        self.device = torch.device(resolve_device(device))
        self._head_betas = torch.tensor(m["head_betas"], dtype=torch.float32, device=self.device)
        self._net = load_network(self.directory / NETWORK_FILE, self.device)

    # ------------------------------------------------------------------ description

    @property
    def artifact_id(self) -> str:
        return str(self.manifest["artifact_id"])

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    def describe(self) -> dict[str, Any]:
        """What a client needs to know: tasks, default weights, the columns a candidate carries, the source run."""
        return {
            "artifact_id": self.artifact_id,
            "tasks": self.tasks,
            "objective": self.objective,
            "weights": dict(self.default_weights),
            "columns": {
                c.name: ("categorical " if c.kind == "categorical" else "numeric ") + c.dtype for c in self.columns
            },
            "item_id": self.item_id_column,
            "nan_policy": self.nan_policy,
            "source": self.manifest.get("source", {}),
            "created": self.manifest.get("created"),
            "device": str(self.device),
        }

    # ------------------------------------------------------------------ weights

    def _weights(
        self, weights: Mapping[str, Any] | None, loc: tuple, partial: bool = True, error: type[Exception] = RequestError
    ) -> dict[str, float]:
        base = dict(getattr(self, "default_weights", {})) if partial else {}
        if weights is None:
            return base
        if not isinstance(weights, Mapping):
            raise request_error(error, loc, f"must be an object mapping task → weight, got {type(weights).__name__}")
        out = dict(base)
        for k, v in weights.items():
            if k not in self.tasks:
                raise request_error(error, (*loc, str(k)), f"unknown task '{k}'; the artifact's tasks are {self.tasks}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not is_finite(v):
                raise request_error(error, (*loc, str(k)), f"must be a finite number, got {v!r}")
            out[k] = float(v)
        missing = [t for t in self.tasks if t not in out]
        if missing:
            raise request_error(error, loc, f"no weight for task(s) {missing}; the artifact's tasks are {self.tasks}")
        return {t: out[t] for t in self.tasks}

    def check_weights(self, weights: Mapping[str, Any] | None) -> dict[str, float]:
        """The weights a request ranks with: the artifact's defaults, overridden by the tasks ``weights`` names.
        Raises :class:`RequestError` (``weights.<task>``) for an unknown task or a weight that is not finite."""
        return self._weights(weights, ("weights",))

    # ------------------------------------------------------------------ rows -> model inputs

    def _columns_from_rows(
        self, rows: Sequence[Any], request: Mapping[str, Any], ignore_unknown: bool, loc: tuple
    ) -> dict[str, list]:
        for i, r in enumerate(rows):
            if type(r) is not dict and not isinstance(r, Mapping):
                raise RequestError(
                    (*loc, i), f"a candidate must be an object of column → value, got {type(r).__name__}"
                )
        if not ignore_unknown:
            seen: set = set().union(*rows)
            unknown = seen - self._known
            if unknown:
                col = sorted(map(str, unknown))[0]
                i = next(i for i, r in enumerate(rows) if col in r)
                raise RequestError(
                    (*loc, i, col),
                    f"unknown column '{col}'; a candidate carries {self.required_columns}"
                    + (f" (and optionally '{self.item_id_column}')" if self.item_id_column else ""),
                    "extra_forbidden",
                )
        cols: dict[str, list] = {}
        wanted = [c.name for c in self.columns] + ([self.item_id_column] if self.item_id_column else [])
        for name in wanted:
            if name in request:
                both = next((i for i, r in enumerate(rows) if name in r), None)
                if both is not None:
                    raise RequestError((*loc, both, name), f"'{name}' is given in the request and in the candidate")
                cols[name] = [request[name]] * len(rows)
                continue
            values = [r.get(name, MISSING) for r in rows]
            if name != self.item_id_column and any(v is MISSING for v in values):
                i = next(i for i, v in enumerate(values) if v is MISSING)
                raise RequestError((*loc, i, name), f"missing column '{name}'", "missing")
            cols[name] = values
        return cols

    def _frame_columns(
        self, frame: pl.DataFrame, request: Mapping[str, Any], ignore_unknown: bool, loc: tuple
    ) -> dict[str, list | pl.Series]:
        if not ignore_unknown:
            unknown = [c for c in frame.columns if c not in self._known]
            if unknown:
                raise RequestError(
                    (*loc, unknown[0]),
                    f"unknown column '{unknown[0]}'; a candidate carries "
                    f"{self.required_columns} (pass ignore_unknown=True to drop extra columns)",
                    "extra_forbidden",
                )
        out: dict[str, list | pl.Series] = {}
        wanted = [c.name for c in self.columns] + ([self.item_id_column] if self.item_id_column else [])
        for name in wanted:
            if name in request:
                if name in frame.columns:
                    raise RequestError((*loc, name), f"'{name}' is given in the request and in the candidates")
                out[name] = [request[name]] * frame.height
            elif name in frame.columns:
                out[name] = frame[name]
            elif name != self.item_id_column:
                raise RequestError((*loc, name), f"missing column '{name}'", "missing")
        return out

    def _encode(
        self, candidates: Any, request: Mapping[str, Any] | None, ignore_unknown: bool, loc: tuple = ("candidates",)
    ) -> tuple[torch.Tensor, torch.Tensor, list | None]:
        request = dict(request or {})
        if isinstance(candidates, pl.DataFrame):
            n, frame = candidates.height, True
        elif isinstance(candidates, Sequence) and not isinstance(candidates, (str, bytes)):
            n, frame = len(candidates), False
        else:
            raise RequestError(
                loc, f"must be a list of candidate rows or a Polars DataFrame, got {type(candidates).__name__}"
            )
        if n == 0:
            raise RequestError(loc, "no candidates to rank: give at least one", "too_short")
        unknown_req = [k for k in request if k not in self._known]
        if unknown_req and not ignore_unknown:
            raise RequestError(("request", unknown_req[0]), f"unknown column '{unknown_req[0]}'", "extra_forbidden")
        cols = (
            self._frame_columns(candidates, request, ignore_unknown, loc)
            if frame
            else self._columns_from_rows(candidates, request, ignore_unknown, loc)
        )
        series = []
        for c in self.columns:
            v = cols[c.name]
            if isinstance(v, pl.Series):
                series.append(series_from_frame(c, v, loc, self.nan_policy))
            elif c.name in request:
                series.append(series_from_values(c, list(v), lambda i, c=c: ("request", c.name), self.nan_policy))
            else:
                series.append(series_from_values(c, list(v), lambda i, c=c: (*loc, i, c.name), self.nan_policy))
        encoded = pl.DataFrame(series).select(self._exprs)
        cat = (
            torch.from_numpy(encoded.select(self._cat_inputs).to_numpy().astype(np.int64))
            if self._cat_inputs
            else torch.zeros((n, 0), dtype=torch.int64)
        )
        num = (
            torch.from_numpy(encoded.select(self._num_inputs).to_numpy().astype(np.float32))
            if self._num_inputs
            else torch.zeros((n, 0), dtype=torch.float32)
        )
        ids = None
        if self.item_id_column and self.item_id_column in cols:
            v = cols[self.item_id_column]
            ids = v.to_list() if isinstance(v, pl.Series) else list(v)
            if not frame and all(x is MISSING for x in ids):
                ids = None  # no candidate carries an item id: the response gives positions only
            elif not frame:
                for i, x in enumerate(ids):
                    if x is MISSING or isinstance(x, bool) or not isinstance(x, (int, str)):
                        raise RequestError(
                            (*loc, i, self.item_id_column),
                            "the item id must be an integer or a string, given for every candidate or for none"
                            if x is MISSING
                            else f"the item id must be an integer or a string, got {x!r}",
                            "type_error",
                        )
        return cat, num, ids

    @torch.inference_mode()
    def _probabilities(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated [N, T], raw [N, T]) float32: as ``RankingModule.calibrated_probabilities`` computes them."""
        logits = self._net(cat.to(self.device), num.to(self.device)).float()
        raw = torch.sigmoid(logits)
        p = torch.sigmoid(correct_logits(logits, self._head_betas))
        if self.objective == "binary":
            raw = raw.expand(-1, len(self.tasks))
            p = p.expand(-1, len(self.tasks))
        if self.calibration.has_calibrators:
            p = self.calibration.calibrate(p, self.tasks)
        return p.cpu().numpy(), raw.cpu().numpy()

    def score(
        self, candidates: Any, request: Mapping[str, Any] | None = None, *, ignore_unknown: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-type probabilities of raw candidate rows: ``(calibrated [N, T], raw [N, T])``, columns in ``tasks``
        order. ``candidates``: a Polars DataFrame or a list of dicts with the log's column names (no labels);
        ``request``: columns shared by every candidate (e.g. the user's and the query's), given once.
        Extra columns are an error unless ``ignore_unknown``."""
        cat, num, _ = self._encode(candidates, request, ignore_unknown)
        return self._probabilities(cat, num)

    def rank(
        self,
        candidates: Any,
        request: Mapping[str, Any] | None = None,
        weights: Mapping[str, Any] | None = None,
        *,
        ignore_unknown: bool = False,
    ) -> Ranking:
        """Score, calibrate, combine by the utility weights and order one request's candidates.

        ``weights``: per-task overrides of the artifact's default utility weights (unknown task or a weight that is
        not a finite number: :class:`RequestError`)."""
        return self.rank_many(
            [{"candidates": candidates, "request": request, "weights": weights}], ignore_unknown=ignore_unknown
        )[0]

    def rank_many(self, requests: Sequence[Mapping[str, Any]], *, ignore_unknown: bool = False) -> list[Ranking]:
        """Rank several requests with one pass of the network; each item is a mapping with ``candidates`` and,
        optionally, ``request`` and ``weights`` (as for :meth:`rank`). Errors name ``requests[i]...`` when there
        is more than one request."""
        if len(requests) == 0:
            raise RequestError(("requests",), "no requests to rank: give at least one", "too_short")
        many = len(requests) > 1
        parts, ws = [], []
        for i, r in enumerate(requests):
            prefix = ("requests", i) if many else ()
            if not isinstance(r, Mapping):
                raise RequestError(
                    ("requests", i), f"a request must be a mapping with 'candidates', got {type(r).__name__}"
                )
            try:
                cat, num, ids = self._encode(r.get("candidates"), r.get("request"), ignore_unknown)
                w = self.check_weights(r.get("weights"))
            except RequestError as exc:
                raise RequestError((*prefix, *exc.loc), exc.message, exc.kind) from None
            parts.append((cat, num, ids))
            ws.append(w)
        sizes = [p[0].shape[0] for p in parts]
        probs, raw = self._probabilities(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        out, start = [], 0
        for (_, _, ids), w, n in zip(parts, ws, sizes):
            p, r = probs[start : start + n], raw[start : start + n]
            start += n
            u = utility_scores(p, [w[t] for t in self.tasks])
            order = np.argsort(-u, kind="stable")
            out.append(Ranking(list(self.tasks), p, r, u, order, w, ids))
        return out

    # ------------------------------------------------------------------ checks


def load_artifact(directory: str | Path, *, device: str = "cpu", verify: bool = True) -> RankingArtifact:
    """Load an exported artifact (see :class:`RankingArtifact`)."""
    return RankingArtifact(directory, device=device, verify=verify)
