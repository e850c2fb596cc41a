"""Route handlers: admission, parsing, the worker round trip, the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict

import orjson
from aiohttp import web

from ..common.config import ServerConfig
from ..ipc import Call, Outcome, RequestKind
from .errors import DeadlineExceeded, PayloadError, WorkerUnavailable
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from . import tei, tei_sparse
from .payload import Parser, parse_pipeline
from .rerank_payload import check_served
from .responses import (
    ErrorFactory,
    Failure,
    error_response,
    exception_failure,
    failure_response,
    outcome_failure,
    unavailable,
)
from .sse import stream_events
from .models import MODEL_LABEL, MODELS_KEY, ServedModel
from .state import CONFIG_KEY, METRICS_KEY, STATE_KEY

# Bodies above this are parsed on a thread so a large JSON document cannot
# stall every other client on the event loop.
_INLINE_PARSE_BYTES = 64 * 1024
_MAX_REQUEST_ID_LENGTH = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    document = {
        "model": worker.model if worker else config.model.model,
        "served_model_name": config.served_model_name,
        "task": worker.task if worker else config.model.task,
        "device": worker.device if worker else config.model.device,
        "dtype": worker.dtype if worker else None,
        "engine": worker.engine if worker else config.model.engine,
        "precision": asdict(worker.precision) if worker and worker.precision else None,
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
        "models": list(models.names),
    }
    document.update(tei_sparse.info_fields(worker))
    # TEI's Info fields beside ours (its max_batch_tokens, an integer, replaces ours).
    document.update(tei.info_fields(config, worker))
    return web.json_response(document, dumps=lambda v: orjson.dumps(v).decode())


async def infer(request: web.Request) -> web.StreamResponse:
    # A sentence-transformers model answers POST / as /embed does (tei.parse_root_embed).
    model = request.app[MODELS_KEY].routed(request)  # None: _serve answers 404
    worker = model.backend.info if model is not None and model.backend is not None else None
    parse = tei.parse_root_embed if worker is not None and worker.sentence_transformers else parse_pipeline
    return await _serve(request, parse, error_response)


def serving(parse: Parser, error: ErrorFactory, named_by: Callable[[Call], str] | None = None) -> Handler:
    """A model route's handler: ``_serve`` with the route's parser, its API
    family's error shape and, where the body names a model, how to read it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _serve(request, parse, error, named_by)

    return handle


def embed_model_name(call: Call) -> str:
    assert call.embed is not None
    return call.embed.model_name


def rerank_model_name(call: Call) -> str:
    assert call.rerank is not None
    return call.rerank.model_name


async def _serve(
    request: web.Request, parse: Parser, error: ErrorFactory, named_by: Callable[[Call], str] | None = None,
) -> web.StreamResponse:
    """Admission, parsing, the worker round trip, and the HTTP answer.
    ``named_by`` reads the model a parsed body names (routes whose body has
    a ``model`` field)."""
    headers = {"X-Request-Id": _request_id(request)}
    try:
        model, call, timeout = await _admit(request, parse, named_by)
        backend = model.backend
        assert backend is not None
        deadline = time.monotonic() + timeout
        if call.kind is RequestKind.STREAM:
            return await stream_events(request, backend.stream(call, deadline), headers, error)
        try:
            return await _answer(request, model, call, deadline, headers)
        except DeadlineExceeded as exc:
            raise Failure(504, "deadline_exceeded", f"no answer within {timeout:g}s") from exc
    except (Failure, PayloadError, WorkerUnavailable, DeadlineExceeded) as exc:
        return failure_response(exception_failure(exc), error, headers)


async def _admit(
    request: web.Request, parse: Parser, named_by: Callable[[Call], str] | None,
) -> tuple[ServedModel, Call, float]:
    """Refuse what cannot be served now; else parse the body. Returns the
    model, the call and its timeout in seconds.

    The model is the route's (its ``/models/{name}`` prefix, else the
    first), known before the body is read, so admission is checked first;
    with several models a body naming one is parsed first (when some model
    could take it at all), then admitted by the model it names."""
    config = request.app[CONFIG_KEY]
    models = request.app[MODELS_KEY]
    if request.app[STATE_KEY].draining:
        raise unavailable("the server is shutting down")
    model = models.routed(request)
    if model is None:
        raise models.unknown(request.match_info["name"])
    by_body = named_by is not None and models.several and "name" not in request.match_info
    if not by_body:
        request[MODEL_LABEL] = model.name
        _check_admission(model, config, models.several)
    elif not models.can_admit_any(config.max_queue):
        _check_admission(models.first, config, models.several)  # none can: the first's reason
    timeout = _timeout(request, config)
    call = await _read_call(request, model.config, parse)
    if by_body:
        assert named_by is not None
        model = models.named(named_by(call))
        request[MODEL_LABEL] = model.name
    # The body's model, or again the route's: others may have been admitted while this body arrived.
    _check_admission(model, config, models.several)
    assert model.backend is not None
    info = model.backend.info
    tei_sparse.check_model_kind(call, info)  # 424 naming the route a sparse (or dense) model serves
    embeds = call.kind in (RequestKind.EMBED, RequestKind.EMBED_ALL)
    if embeds and info is not None and info.embedding_dimension is None:
        raise Failure(400, "not_supported", f"this model ({info.task}) does not produce sentence embeddings")
    check_served(call, info)  # rerank needs a cross-encoder, predict a classifier
    return model, call, timeout


def _check_admission(model: ServedModel, config: ServerConfig, several: bool) -> None:
    """503 unless the model is ready and has room (--max-queue per model)."""
    backend = model.backend
    assert backend is not None
    if not backend.ready:
        raise unavailable(f"the model {model.name} is not ready" if several else "the model is not ready")
    if backend.in_flight >= config.max_queue:
        raise unavailable("the server is overloaded; retry later")


async def _answer(
    request: web.Request, model: ServedModel, call: Call, deadline: float, headers: dict[str, str],
) -> web.Response:
    assert model.backend is not None
    result = await model.backend.infer(call, deadline)
    headers["X-Batch-Size"] = str(result.batch_size)
    if result.outcome is not Outcome.OK:
        raise outcome_failure(result.outcome, result.message)
    request.app[METRICS_KEY].observe_queue_wait(model.name, result.queue_ms / 1000.0)
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
    if len(body) > config.max_body_bytes:  # aiohttp lets a chunked body of limit + 1 through
        raise _too_large(config)
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
