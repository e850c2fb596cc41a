"""Route handlers: admission, parsing, the worker round trip, the answer."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from ..common.config import ServerConfig
from ..ipc import Call, Outcome, RequestKind
from .errors import DeadlineExceeded, PayloadError, WorkerUnavailable
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .payload import Parser, parse_embed, parse_openai_embeddings, parse_pipeline
from .responses import (
    ErrorFactory,
    Failure,
    error_response,
    exception_failure,
    failure_response,
    openai_error,
    outcome_failure,
    unavailable,
)
from .sse import stream_events
from .state import BACKEND_KEY, CONFIG_KEY, METRICS_KEY, STATE_KEY

# Bodies above this are parsed on a thread so a large JSON document cannot
# stall every other client on the event loop.
_INLINE_PARSE_BYTES = 64 * 1024
_MAX_REQUEST_ID_LENGTH = 128


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    if request.app[STATE_KEY].draining:
        return failure_response(unavailable("draining"), error_response, {})
    if not request.app[BACKEND_KEY].ready:
        return failure_response(unavailable("the model is loading"), error_response, {})
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def info(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    backend = request.app[BACKEND_KEY]
    state = request.app[STATE_KEY]
    worker = backend.info
    document = {
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
    }
    return web.json_response(document, dumps=lambda v: orjson.dumps(v).decode())


async def infer(request: web.Request) -> web.StreamResponse:
    return await _serve(request, parse_pipeline, error_response)


async def embed(request: web.Request) -> web.StreamResponse:
    return await _serve(request, parse_embed, error_response)


async def openai_embeddings(request: web.Request) -> web.StreamResponse:
    return await _serve(request, parse_openai_embeddings, openai_error)


async def _serve(request: web.Request, parse: Parser, error: ErrorFactory) -> web.StreamResponse:
    """Admission, parsing, the worker round trip, and the HTTP answer."""
    headers = {"X-Request-Id": _request_id(request)}
    try:
        call, timeout = await _admit(request, parse)
        deadline = time.monotonic() + timeout
        if call.kind is RequestKind.STREAM:
            backend = request.app[BACKEND_KEY]
            return await stream_events(request, backend.stream(call, deadline), headers, error)
        try:
            return await _answer(request, call, deadline, headers)
        except DeadlineExceeded as exc:
            raise Failure(504, "deadline_exceeded", f"no answer within {timeout:g}s") from exc
    except (Failure, PayloadError, WorkerUnavailable, DeadlineExceeded) as exc:
        return failure_response(exception_failure(exc), error, headers)


async def _admit(request: web.Request, parse: Parser) -> tuple[Call, float]:
    """Refuse what cannot be served now; else parse the body. Returns the
    call and its timeout in seconds."""
    config = request.app[CONFIG_KEY]
    backend = request.app[BACKEND_KEY]
    if request.app[STATE_KEY].draining:
        raise unavailable("the server is shutting down")
    if not backend.ready:
        raise unavailable("the model is not ready")
    if backend.in_flight >= config.max_queue:
        raise unavailable("the server is overloaded; retry later")
    timeout = _timeout(request, config)
    call = await _read_call(request, config, parse)
    info = backend.info
    if call.kind is RequestKind.EMBED and info is not None and info.embedding_dimension is None:
        raise Failure(400, "not_supported", f"this model ({info.task}) does not produce sentence embeddings")
    return call, timeout


async def _answer(request: web.Request, call: Call, deadline: float, headers: dict[str, str]) -> web.Response:
    result = await request.app[BACKEND_KEY].infer(call, deadline)
    headers["X-Batch-Size"] = str(result.batch_size)
    if result.outcome is not Outcome.OK:
        raise outcome_failure(result.outcome, result.message)
    request.app[METRICS_KEY].queue_wait.observe(result.queue_ms / 1000.0)
    headers["X-Queue-Time-Ms"] = f"{result.queue_ms:.3f}"
    headers["X-Compute-Time-Ms"] = f"{result.compute_ms:.3f}"
    return web.Response(body=result.body, content_type="application/json", headers=headers)


async def _read_call(request: web.Request, config: ServerConfig, parse: Parser) -> Call:
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        raise _too_large(config)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked body over the limit
        raise _too_large(config) from exc
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse(body, request.content_type, config)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, parse, body, request.content_type, config)


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
