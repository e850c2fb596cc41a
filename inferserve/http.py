"""The HTTP front-end: routes, parsing, admission, mapping results to HTTP.

Never imports torch or transformers and never blocks the event loop: model
outputs arrive from the worker already JSON-encoded and are written as-is.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import __version__
from .config import ServerConfig
from .errors import OUTCOME_STATUS, RETRY_AFTER_S, ErrorFactory, error_response, openai_error
from .ipc import EmbedOptions, Outcome, RequestKind
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .payload import (
    PayloadError,
    is_json,
    parse_embed_body,
    parse_inference_body,
    parse_openai_embeddings_body,
)
from .sse import stream_events
from .backend import DeadlineExceeded, InferenceBackend, WorkerUnavailable
from .supervisor import WorkerPool, worker_specs

log = logging.getLogger("inferserve")

# Bodies above this are parsed on a thread so a large JSON document cannot
# stall every other client on the event loop.
_INLINE_PARSE_BYTES = 64 * 1024
_MAX_REQUEST_ID_LENGTH = 128
# Routes that stay open without the API key: liveness/readiness probes.
_PUBLIC_PATHS = frozenset({"/health", "/ready"})


def _request_ids() -> Iterator[str]:
    # 32 hex digits like a uuid4, without a getrandom() call and a UUID per
    # request: a random prefix per server start, then a counter.
    prefix = os.urandom(8).hex()
    return (f"{prefix}{n:016x}" for n in itertools.count(1))


@dataclass
class ServerState:
    """Mutable state of one running app (never module-level)."""

    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
    versions: dict[str, str | None] = field(default_factory=dict)
    request_ids: Iterator[str] = field(default_factory=_request_ids)


def _installed_versions() -> dict[str, str | None]:
    # From package metadata: importing torch here to ask would load it.
    versions: dict[str, str | None] = {"inferserve": __version__}
    for package in ("torch", "transformers", "aiohttp"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


CONFIG_KEY = web.AppKey("config", ServerConfig)
BACKEND_KEY = web.AppKey("backend", InferenceBackend)
STATE_KEY = web.AppKey("state", ServerState)
METRICS_KEY = web.AppKey("metrics", ServerMetrics)


def unavailable(message: str, headers: dict[str, str] | None = None) -> web.Response:
    return error_response(503, "unavailable", message, {**(headers or {}), "Retry-After": RETRY_AFTER_S})


# ---- middlewares ----------------------------------------------------------


@web.middleware
async def observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count every answered request by route and status, and time it."""
    metrics = request.app[METRICS_KEY]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.monotonic()
    metrics.in_flight.inc()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # client closed the connection (nginx's convention)
        raise
    finally:
        metrics.in_flight.dec()
        metrics.observe_request(route, status, time.monotonic() - started)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as JSON; internals only with --debug."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, kind, exc.reason, headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - our bug: log it, answer 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = f"{type(exc).__name__}: {exc}" if request.app[CONFIG_KEY].debug else "internal error"
        return error_response(500, "internal_error", message)


def api_key_guard(api_key: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path not in _PUBLIC_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant-time
                return error_response(
                    401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": "Bearer"}
                )
        return await handler(request)

    return guard


# ---- handlers ------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    backend = request.app[BACKEND_KEY]
    if request.app[STATE_KEY].draining:
        return unavailable("draining")
    if not backend.ready:
        return unavailable("the model is loading")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def info(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    backend = request.app[BACKEND_KEY]
    state = request.app[STATE_KEY]
    worker = backend.info
    return web.json_response(
        {
            "model": worker.model if worker else config.model.model,
            "served_model_name": config.served_model_name,
            "task": worker.task if worker else config.model.task,
            "device": worker.device if worker else config.model.device,
            "dtype": worker.dtype if worker else None,
            "embedding_dimension": worker.embedding_dimension if worker else None,
            "ready": backend.ready,
            "workers": config.workers,
            "max_batch_size": config.batch.max_batch_size,
            "max_batch_delay_ms": config.batch.max_batch_delay_ms,
            "max_batch_tokens": config.batch.max_batch_tokens,
            "batch_wait": "adaptive" if config.batch.adaptive_wait else "fixed",
            "max_queue": config.max_queue,
            "max_inputs": config.max_inputs,
            "max_body_bytes": config.max_body_bytes,
            "request_timeout_s": config.request_timeout_s,
            "versions": state.versions,
            "uptime_s": round(time.monotonic() - state.started_at, 3),
        },
        dumps=lambda v: orjson.dumps(v).decode(),
    )


@dataclass(frozen=True)
class ModelCall:
    """What one HTTP request asks of the worker."""

    inputs: tuple[Any, ...]
    params: dict[str, Any]
    single: bool
    kind: RequestKind = RequestKind.PIPELINE
    embed: EmbedOptions | None = None


# Turns a body into a ModelCall (or raises PayloadError); runs off the loop for large bodies.
Parser = Callable[[bytes, str, ServerConfig, InferenceBackend], ModelCall]


def _parse_pipeline(body: bytes, content_type: str, config: ServerConfig, backend: InferenceBackend) -> ModelCall:
    payload = parse_inference_body(body, content_type, config.max_inputs)
    kind = RequestKind.STREAM if payload.stream else RequestKind.PIPELINE
    return ModelCall(payload.inputs, payload.parameters, payload.single, kind)


def _require_json(content_type: str) -> None:
    if not is_json(content_type):
        raise PayloadError(415, "unsupported_media_type", "send application/json")


def _parse_embed(body: bytes, content_type: str, config: ServerConfig, backend: InferenceBackend) -> ModelCall:
    _require_json(content_type)
    inputs, options = parse_embed_body(body, config.max_inputs)
    return ModelCall(inputs, {}, False, RequestKind.EMBED, options)


def _parse_openai(body: bytes, content_type: str, config: ServerConfig, backend: InferenceBackend) -> ModelCall:
    _require_json(content_type)
    inputs, options = parse_openai_embeddings_body(body, config.max_inputs, config.served_model_name)
    return ModelCall(inputs, {}, False, RequestKind.EMBED, options)


async def infer(request: web.Request) -> web.Response:
    return await _serve(request, _parse_pipeline, error_response)


async def embed(request: web.Request) -> web.Response:
    return await _serve(request, _parse_embed, error_response, embeddings=True)


async def openai_embeddings(request: web.Request) -> web.Response:
    return await _serve(request, _parse_openai, openai_error, embeddings=True)


async def _serve(
    request: web.Request, parse: Parser, error: ErrorFactory, embeddings: bool = False
) -> web.StreamResponse:
    """Admission, parsing, the worker round trip, and the HTTP answer."""
    config = request.app[CONFIG_KEY]
    backend = request.app[BACKEND_KEY]
    headers = {"X-Request-Id": _request_id(request)}
    retry = {**headers, "Retry-After": RETRY_AFTER_S}
    if request.app[STATE_KEY].draining:
        return error(503, "unavailable", "the server is shutting down", retry)
    if not backend.ready:
        return error(503, "unavailable", "the model is not ready", retry)
    if embeddings and backend.info is not None and backend.info.embedding_dimension is None:
        return error(400, "not_supported", f"this model ({backend.info.task}) does not produce sentence embeddings", headers)
    if backend.in_flight >= config.max_queue:
        return error(503, "unavailable", "the server is overloaded; retry later", retry)
    try:
        timeout = _timeout(request, config)
        call = await _read_call(request, config, backend, parse)
    except PayloadError as exc:
        return error(exc.status, exc.kind, exc.message, headers)
    deadline = time.monotonic() + timeout
    if call.kind is RequestKind.STREAM:
        return await stream_events(request, backend.stream(call.inputs[0], call.params, deadline), headers, error)
    try:
        result = await backend.infer(call.inputs, call.params, call.single, deadline, call.kind, call.embed)
    except WorkerUnavailable as exc:
        return error(503, "unavailable", str(exc), retry)
    except DeadlineExceeded:
        return error(504, "deadline_exceeded", f"no answer within {timeout:g}s", headers)
    headers["X-Batch-Size"] = str(result.batch_size)
    if result.outcome is not Outcome.OK:
        status, kind = OUTCOME_STATUS[result.outcome]
        return error(status, kind, result.message, headers)
    request.app[METRICS_KEY].queue_wait.observe(result.queue_ms / 1000.0)
    headers["X-Queue-Time-Ms"] = f"{result.queue_ms:.3f}"
    headers["X-Compute-Time-Ms"] = f"{result.compute_ms:.3f}"
    return web.Response(body=result.body, content_type="application/json", headers=headers)


async def _read_call(request: web.Request, config: ServerConfig, backend: InferenceBackend, parse: Parser) -> ModelCall:
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        raise _too_large(config)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked body over the limit
        raise _too_large(config) from exc
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse(body, request.content_type, config, backend)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, parse, body, request.content_type, config, backend)


def _too_large(config: ServerConfig) -> PayloadError:
    return PayloadError(413, "payload_too_large", f"the body exceeds {config.max_body_bytes} bytes")


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
        raise PayloadError(400, "invalid_timeout", "X-Request-Timeout must be a positive number of seconds")
    return min(asked, config.request_timeout_s)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= _MAX_REQUEST_ID_LENGTH and given.isascii() and given.isprintable():
        return given
    return next(request.app[STATE_KEY].request_ids)


# ---- application ---------------------------------------------------------


def create_app(config: ServerConfig, backend: InferenceBackend | None = None) -> web.Application:
    """The aiohttp app; without ``backend`` it owns a real worker process."""
    middlewares = [observe, json_errors]
    if config.api_key:
        middlewares.append(api_key_guard(config.api_key))
    # +1 so that a body of exactly the limit is accepted and ours is the 413.
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes + 1)
    app[CONFIG_KEY] = config
    app[STATE_KEY] = ServerState(versions=_installed_versions())
    app[METRICS_KEY] = ServerMetrics()
    if backend is not None:
        _attach_backend(app, backend)
    else:
        app.cleanup_ctx.append(_worker_lifecycle)
    app.router.add_post("/", infer)
    app.router.add_post("/embed", embed)
    app.router.add_post("/v1/embeddings", openai_embeddings)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/info", info)
    app.router.add_get("/metrics", metrics)
    return app


def _attach_backend(app: web.Application, backend: InferenceBackend) -> None:
    app[BACKEND_KEY] = backend
    app[METRICS_KEY].track_backend(lambda: backend.in_flight, lambda: float(backend.ready))


async def _worker_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Spawn the worker with the app; stop it (after the drain) with the app."""
    config = app[CONFIG_KEY]
    metrics = app[METRICS_KEY]
    pool = WorkerPool(
        worker_specs(config.model, config.workers, config.devices),
        config.batch,
        log_level=config.log_level,
        log_format=config.log_format,
        on_batch=metrics.observe_batch,
        on_restart=metrics.worker_restarts.inc,
        on_answer=metrics.observe_answer,
        on_retry=metrics.retries.inc,
    )
    _attach_backend(app, pool)
    await pool.start()
    yield
    await pool.stop(timeout=config.graceful_timeout_s)
