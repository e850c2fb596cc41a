"""How outcomes and failures look to clients: one mapping to HTTP statuses,
and the JSON error shape of each API family."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from ..ipc import Outcome
from .errors import DeadlineExceeded, PayloadError, WorkerUnavailable

RETRY_AFTER_S = "1"

_OUTCOME_STATUS = {
    Outcome.INVALID_INPUT: (422, "invalid_input"),
    Outcome.INVALID_PARAMETERS: (422, "invalid_parameters"),
    Outcome.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
    Outcome.INTERNAL: (500, "internal_error"),
}


class Failure(Exception):
    """An answer that is an error: its status, kind, message and extra headers."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


def outcome_failure(outcome: Outcome, message: str) -> Failure:
    """A worker's non-OK outcome as the HTTP error it becomes."""
    status, kind = _OUTCOME_STATUS[outcome]
    return Failure(status, kind, message)


def exception_failure(exc: Exception) -> Failure:
    """A front-end exception (parsing, worker gone, deadline) as an HTTP error."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, PayloadError):
        return Failure(exc.status, exc.kind, exc.message)
    if isinstance(exc, WorkerUnavailable):
        return Failure(503, "unavailable", str(exc) or "no worker is available", {"Retry-After": RETRY_AFTER_S})
    if isinstance(exc, DeadlineExceeded):
        return Failure(504, "deadline_exceeded", str(exc) or "no answer in time")
    raise TypeError(f"not a request failure: {exc!r}") from exc


def unavailable(message: str) -> Failure:
    return Failure(503, "unavailable", message, {"Retry-After": RETRY_AFTER_S})


# (status, kind, message, headers) -> response; each API family has its shape.
ErrorFactory = Callable[[int, str, str, dict[str, str]], web.Response]


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Our error shape: {"error": message, "type": kind}."""
    return _json_error(status, {"error": message, "type": kind}, headers)


def openai_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """OpenAI's error shape, for the /v1 routes."""
    error_type = "invalid_request_error" if status < 500 else "server_error"
    document = {"error": {"message": message, "type": error_type, "param": None, "code": kind}}
    return _json_error(status, document, headers)


def tei_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """text-embeddings-inference's error shape, for its routes (/embed,
    /embed_all, /tokenize, /decode, /rerank, /predict): ``{"error": message,
    "error_type": Unhealthy|Backend|Overloaded|Validation|Tokenizer|Empty}``,
    with TEI's statuses where ours differ: a model that does not serve the
    route (TEI: "not an embedding model") and a failed inference are 424
    Backend. 503 stays ours (not ready, draining, overloaded), as does 504."""
    if kind in ("not_supported", "internal_error"):
        status, error_type = 424, "Backend"
    elif status == 503:
        error_type = "Overloaded" if "overloaded" in message else "Unhealthy"
    elif status == 429:
        error_type = "Overloaded"
    elif status >= 500:
        error_type = "Backend"
    elif kind == "empty_input":
        error_type = "Empty"
    elif kind == "tokenizer":
        error_type = "Tokenizer"
    else:
        error_type = "Validation"
    return _json_error(status, {"error": message, "error_type": error_type}, headers)


def cohere_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Cohere's error shape, ``{"message": ...}``, for /v1/rerank and /v2/rerank:
    what Cohere's API answers (its SDKs raise ApiError carrying this body) and
    what rerank clients print; Jina's clients only read the status."""
    return _json_error(status, {"message": message}, headers)


def _json_error(status: int, document: dict[str, object], headers: dict[str, str] | None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json", headers=headers)


def failure_response(failure: Failure, error: ErrorFactory, headers: dict[str, str]) -> web.Response:
    return error(failure.status, failure.kind, failure.message, {**headers, **failure.headers})


# The error shape of each API family, by the last part of a route's path (a
# /models/{name} prefix keeps its route's family): for the errors raised
# before a handler runs (401, 404, 405) or by our own bugs (500).
_FAMILIES: tuple[tuple[str, ErrorFactory], ...] = (
    ("/v1/embeddings", openai_error),
    ("/v1/models", openai_error),
    ("/v1/rerank", cohere_error),
    ("/v2/rerank", cohere_error),
    ("/embed", tei_error),
    ("/embed_all", tei_error),
    ("/embed_sparse", tei_error),
    ("/similarity", tei_error),
    ("/tokenize", tei_error),
    ("/decode", tei_error),
    ("/rerank", tei_error),
    ("/predict", tei_error),
)


def error_factory_for(path: str) -> ErrorFactory:
    """The error shape the API family of ``path`` uses; ours otherwise."""
    for suffix, factory in _FAMILIES:
        if path.endswith(suffix):
            return factory
    if path.startswith("/v1/models/"):
        return openai_error
    return error_response
