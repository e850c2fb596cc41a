"""Route handlers: a model route's walk (admission with its parsing, the
worker round trip, the answer) and the server's own routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial

import orjson
from aiohttp import web

from ..common.config import ServerConfig
from ..ipc import Call, Outcome, RequestKind
from . import tei, tei_sparse
from .backend import InferenceBackend
from .body import read_call
from .errors import DeadlineExceeded, RequestError, WorkerUnavailable
from .fields import Parser
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .models import MODEL_LABEL, MODELS_KEY
from .root import ROOT_BODIES, root_kind
from .responses import ErrorFactory, error_response, exception_failure, failure_response, outcome_failure, unavailable
from .route import Handler, Route
from .sse import stream_events
from .state import CONFIG_KEY, METRICS_KEY, STATE_KEY

_MAX_REQUEST_ID_LENGTH = 128

async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 once every model is ready (``/models/{name}/ready``: that one)."""
    if request.app[STATE_KEY].draining:
        return failure_response(unavailable("draining"), error_response, {})
    models = request.app[MODELS_KEY]
    model = models.routed(request)
    if model is None:
        return failure_response(models.unknown(request.match_info["name"]), error_response, {})
    loading = models.loading() if "name" not in request.match_info else (
        [] if model.backend is not None and model.backend.ready else [model.name])
    if loading:
        message = "the model is loading" if not models.several else f"loading: {', '.join(loading)}"
        return failure_response(unavailable(message), error_response, {})
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def info(request: web.Request) -> web.Response:
    """The first model's (``/models/{name}/info``: that one's), with every model's name."""
    models = request.app[MODELS_KEY]
    model = models.routed(request)
    if model is None:
        return failure_response(models.unknown(request.match_info["name"]), error_response, {})
    request[MODEL_LABEL] = model.name
    config, backend = model.config, model.backend
    assert backend is not None
    state = request.app[STATE_KEY]
    worker = backend.info
    # TEI's Info fields with TEI's meaning (tei.info_fields: served_model_name
    # the name, model_id where it was loaded from, model_dtype, ...), then
    # ours that TEI has no field for: each fact once.
    document = tei.info_fields(model.name, config, worker)
    document.update({
        "task": worker.task if worker else config.model.task,
        "device": worker.device if worker else config.model.device,
        "engine": worker.engine if worker else config.model.engine,
        "precision": asdict(worker.precision) if worker and worker.precision else None,
        "cost_model": asdict(worker.cost_model) if worker and worker.cost_model else None,
        "embedding_dimension": worker.facts.embedding_dimension if worker else None,
        "ready": backend.ready,
        "workers": config.workers,
        "max_batch_size": config.batch.max_batch_size,
        "max_batch_delay_ms": config.batch.max_batch_delay_ms,
        "batch_wait": "adaptive" if config.batch.adaptive_wait else "fixed",
        "max_inputs": config.max_inputs,
        "max_body_bytes": config.max_body_bytes,
        "request_timeout_s": config.request_timeout_s,
        "versions": state.versions,
        "uptime_s": round(time.monotonic() - state.started_at, 3),
        "models": list(models.names),
    })
    document.update(tei_sparse.info_fields(worker))
    return web.json_response(document, dumps=lambda v: orjson.dumps(v).decode())


async def infer(request: web.Request) -> web.StreamResponse:
    """``POST /``: the body the routed model takes (root.py: the inference
    API's, or a sentence-transformers or SPLADE model's)."""
    model = request.app[MODELS_KEY].routed(request)  # None: admission answers 404
    worker = model.backend.info if model is not None and model.backend is not None else None
    body = ROOT_BODIES[root_kind(worker)]
    return await _serve(request, body.parse, body.request, error_response)


def serving(route: Route) -> Handler:
    """A model route's handler: ``_serve`` with the route's parser and
    schema, its API family's error shape and, where the body names a model,
    how to read it."""
    assert route.parse is not None and route.request is not None, route
    parse, schema, error, named_by = route.parse, route.request, route.family.error, route.named_by

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _serve(request, parse, schema, error, named_by)

    return handle


def embed_model_name(call: Call) -> str:
    assert call.embed is not None
    return call.embed.model_name


def rerank_model_name(call: Call) -> str:
    assert call.rerank is not None
    return call.rerank.model_name


async def _serve(
    request: web.Request, parse: Parser, schema: str, error: ErrorFactory,
    named_by: Callable[[Call], str] | None = None,
) -> web.StreamResponse:
    """Admission (which parses the body), the worker round trip, and the
    HTTP answer. ``named_by`` reads the model a parsed body names (routes
    whose body has a ``model`` field)."""
    headers = {"X-Request-Id": _request_id(request)}
    try:
        timeout = _timeout(request, request.app[CONFIG_KEY])
        read = partial(read_call, request, parse=parse, schema=schema)
        admitted = await request.app[MODELS_KEY].admit(request, request.app[STATE_KEY].draining, read, named_by)
        backend, call = admitted.backend, admitted.call
        deadline = time.monotonic() + timeout
        if call.kind is RequestKind.STREAM:
            return await stream_events(request, backend.stream(call, deadline), headers, error)
        try:
            return await _answer(request, admitted.name, backend, call, deadline, headers)
        except DeadlineExceeded as exc:
            raise RequestError(504, "deadline_exceeded", f"no answer within {timeout:g}s") from exc
    except (RequestError, WorkerUnavailable, DeadlineExceeded) as exc:
        return failure_response(exception_failure(exc), error, headers)


async def _answer(
    request: web.Request, name: str, backend: InferenceBackend, call: Call, deadline: float, headers: dict[str, str],
) -> web.Response:
    result = await backend.infer(call, deadline)
    headers["X-Batch-Size"] = str(result.batch_size)
    if result.outcome is not Outcome.OK:
        raise outcome_failure(result.outcome, result.message)
    request.app[METRICS_KEY].observe_queue_wait(name, result.queue_ms / 1000.0)
    headers["X-Queue-Time-Ms"] = f"{result.queue_ms:.3f}"
    headers["X-Compute-Time-Ms"] = f"{result.compute_ms:.3f}"
    return web.Response(body=result.body, content_type="application/json", headers=headers)


def _timeout(request: web.Request, config: ServerConfig) -> float:
    """The flag's timeout, or the client's X-Request-Timeout if shorter."""
    raw = request.headers.get("X-Request-Timeout")
    if raw is None:
        return config.request_timeout_s
    try:
        asked = float(raw)
    except ValueError:
        asked = -1.0
    if not asked > 0:
        raise RequestError(400, "invalid_timeout", "X-Request-Timeout must be a positive number of seconds")
    return min(asked, config.request_timeout_s)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= _MAX_REQUEST_ID_LENGTH and given.isascii() and given.isprintable():
        return given
    return next(request.app[STATE_KEY].request_ids)
