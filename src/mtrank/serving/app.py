"""The ranking service: FastAPI on uvicorn, over one exported artifact (``python src/serve.py``; README "Serving").

Endpoints
---------
* ``POST /rank``: ``{"request": {...}, "candidates": [{...}, ...], "weights": {...}, "request_id": ...}`` →
  ``{"order", "item_ids", "utility", "probabilities": {task: [...]}, "weights", "artifact_id", "request_id"}``.
  ``request`` holds the columns every candidate shares (the user's, the query's), given once; ``weights`` overrides
  the default utility weight of the tasks it names, for this request only.
* ``POST /rank/batch``: ``{"requests": [<a /rank body>, ...]}`` → ``{"results": [...]}``, one network pass.
* ``GET /health``: status, artifact id, tasks, default weights, when the artifact was loaded.
* ``GET /metadata``: the artifact's description (columns and their types, source run, versions).
* ``PUT /weights``: ``{"weights": {...}}`` changes the default weights in memory (until the next reload).
* ``POST /reload``: reads the artifact folder again (e.g. after ``python src/export.py`` replaced it); a failed load
  keeps the artifact in service and answers 409. ``SIGHUP`` does the same.

Errors: every bad request is a 4xx whose body is FastAPI's ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``
with ``loc`` the path of the offending field (``["body", "candidates", 3, "price"]``): 422 for a missing column, a
wrong type, an empty candidate list, an unknown field or column, an unknown task or a non-finite weight, too many
candidates; 413 for a body over ``max_body_bytes``. A 500 is a bug in the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from mtrank.serving.artifact import RankingArtifact
from mtrank.serving.files import ArtifactError
from mtrank.serving.results import Ranking, RequestError

log = logging.getLogger(__name__)

__all__ = ["ServeSettings", "create_app"]

Scalar = Union[StrictInt, StrictFloat, StrictStr, None]  # noqa: UP007 (one pydantic union, as its error locs name it)
_SCALAR_TAGS = {"int", "float", "str"}  # how pydantic names the members of Scalar in an error's loc


@dataclass
class ServeSettings:
    artifact: str
    device: str = "cpu"
    max_body_bytes: int = 4 * 2**20
    max_candidates: int = 5000  # per request
    max_batch_requests: int = 64
    allow_reload: bool = True


class RankBody(BaseModel):
    """One request to rank."""

    model_config = ConfigDict(extra="forbid")
    request_id: StrictInt | StrictStr | None = Field(None, description="echoed back")
    request: dict[str, Scalar] = Field(
        default_factory=dict, description="columns shared by every candidate (user, query), given once"
    )
    candidates: list[dict[str, Scalar]] = Field(description="candidate rows: the log's column names, no labels")
    weights: dict[str, float] | None = Field(None, description="per-task utility weights for this request")


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[RankBody]


class WeightsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float]


def _error(status: int, loc: list, msg: str, kind: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": [{"loc": loc, "msg": msg, "type": kind}]})


class _BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 before it is parsed (by its Content-Length, or while
    it streams in without one)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = -1
                if size < 0 or size > self.limit:
                    resp = _error(
                        413,
                        ["body"],
                        f"the request body has {value.decode(errors='replace')} bytes; "
                        f"the limit is max_body_bytes={self.limit}",
                        "too_large",
                    )
                    return await resp(scope, receive, send)
        # no (or a small) Content-Length: read the body here, counting, and hand it on whole
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                resp = _error(413, ["body"], f"the request body is over max_body_bytes={self.limit}", "too_large")
                return await resp(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _State:
    """The artifact in service; swapped whole on reload (readers take one reference per request)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.artifact = RankingArtifact(settings.artifact, device=settings.device)
        self.loaded_at = time.time()
        self.reloads = 0

    def reload(self) -> RankingArtifact:
        with self.lock:
            fresh = RankingArtifact(self.settings.artifact, device=self.settings.device)
            self.artifact, self.loaded_at = fresh, time.time()
            self.reloads += 1
            log.info("reloaded the artifact %s (id %s)", self.settings.artifact, fresh.artifact_id)
            return fresh


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json")


def _result(r: Ranking, artifact: RankingArtifact, request_id: Any) -> dict[str, Any]:
    out = r.to_dict()
    out["artifact_id"] = artifact.artifact_id
    if request_id is not None:
        out["request_id"] = request_id
    return out


def _check_sizes(bodies: list[RankBody], settings: ServeSettings, batched: bool) -> None:
    for i, b in enumerate(bodies):
        if len(b.candidates) > settings.max_candidates:
            raise RequestError(
                ("requests", i, "candidates") if batched else ("candidates",),
                f"{len(b.candidates)} candidates; the limit is max_candidates={settings.max_candidates}",
                "too_long",
            )


def create_app(settings: ServeSettings) -> FastAPI:
    """The FastAPI application over ``settings.artifact`` (loaded now: a broken artifact fails here, not later)."""
    state = _State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        hup = getattr(signal, "SIGHUP", None)
        installed = False
        if settings.allow_reload and hup is not None and threading.current_thread() is threading.main_thread():

            def on_hup() -> None:
                async def run() -> None:
                    try:
                        await asyncio.to_thread(state.reload)
                    except Exception as exc:  # noqa: BLE001 - keep serving the old artifact
                        log.error(
                            "SIGHUP: reloading %s failed, the previous artifact stays in service: %s",
                            settings.artifact,
                            exc,
                        )

                loop.create_task(run())

            try:
                loop.add_signal_handler(hup, on_hup)
                installed = True
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this platform / loop
                pass
        log.info(
            "serving %s (artifact %s, tasks %s)", settings.artifact, state.artifact.artifact_id, state.artifact.tasks
        )
        yield
        if installed:
            loop.remove_signal_handler(hup)

    app = FastAPI(
        title="mtrank ranking service",
        version="1",
        lifespan=lifespan,
        description="Multi-task ranking: calibrated per-type probabilities, utility and order.",
    )
    app.state.mtrank = state

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error(422, ["body", *exc.loc], exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, seen = [], set()
        for e in exc.errors():
            loc, msg, kind = list(e.get("loc", ())), e.get("msg"), e.get("type")
            if loc and loc[-1] in _SCALAR_TAGS:  # one error per value, not one per member of the scalar union
                loc, msg, kind = loc[:-1], "Input should be a number, a string or null", "scalar_type"
            if tuple(map(str, loc)) in seen:
                continue
            seen.add(tuple(map(str, loc)))
            field = ".".join(str(x) for x in loc[1:]) or "body"
            detail.append({"loc": loc, "msg": f"{field}: {msg}", "type": kind})
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/health")
    def health() -> Response:
        art = state.artifact
        return _json(
            {
                "status": "ok",
                "artifact_id": art.artifact_id,
                "tasks": art.tasks,
                "weights": art.default_weights,
                "loaded_at": state.loaded_at,
                "reloads": state.reloads,
            }
        )

    @app.get("/metadata")
    def metadata() -> Response:
        art = state.artifact
        return _json(
            {
                **art.describe(),
                "limits": {
                    "max_body_bytes": settings.max_body_bytes,
                    "max_candidates": settings.max_candidates,
                    "max_batch_requests": settings.max_batch_requests,
                },
            }
        )

    @app.post("/rank")
    def rank(body: RankBody) -> Response:
        art = state.artifact
        _check_sizes([body], settings, batched=False)
        r = art.rank_many([{"candidates": body.candidates, "request": body.request, "weights": body.weights}])[0]
        return _json(_result(r, art, body.request_id))

    @app.post("/rank/batch")
    def rank_batch(body: BatchBody) -> Response:
        art = state.artifact
        if not body.requests:
            raise RequestError(("requests",), "no requests to rank: give at least one", "too_short")
        if len(body.requests) > settings.max_batch_requests:
            raise RequestError(
                ("requests",),
                f"{len(body.requests)} requests; the limit is max_batch_requests={settings.max_batch_requests}",
                "too_long",
            )
        _check_sizes(body.requests, settings, batched=True)
        items = [{"candidates": b.candidates, "request": b.request, "weights": b.weights} for b in body.requests]
        if len(items) == 1:  # rank_many names fields requests[i]... only for several requests
            try:
                rankings = art.rank_many(items)
            except RequestError as exc:
                raise RequestError(("requests", 0, *exc.loc), exc.message, exc.kind) from None
        else:
            rankings = art.rank_many(items)
        return _json({"results": [_result(r, art, b.request_id) for r, b in zip(rankings, body.requests)]})

    @app.put("/weights")
    def put_weights(body: WeightsBody) -> Response:
        with state.lock:
            art = state.artifact
            art.default_weights = art.check_weights(body.weights)
        return _json({"weights": art.default_weights, "artifact_id": art.artifact_id})

    @app.post("/reload")
    def reload() -> Response:
        if not settings.allow_reload:
            return _error(403, ["reload"], "reloading is switched off (allow_reload=false)", "forbidden")
        try:
            art = state.reload()
        except (ArtifactError, OSError, ValueError, RuntimeError) as exc:
            log.error("reload of %s failed, the previous artifact stays in service: %s", settings.artifact, exc)
            return _error(
                409,
                ["artifact"],
                f"the artifact at {settings.artifact} could not be loaded, the previous "
                f"one ({state.artifact.artifact_id}) stays in service: {exc}",
                "reload_failed",
            )
        return _json({"status": "reloaded", "artifact_id": art.artifact_id, "weights": art.default_weights})

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app


def resolve_artifact(path: str | Path) -> Path:
    """An artifact folder as it is; a training run folder: its ``artifact/`` (exported by the caller when missing)."""
    p = Path(path).expanduser()
    if (p / "manifest.json").is_file():
        return p
    return p / "artifact"
