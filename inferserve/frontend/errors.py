"""The front-end's exception types: what a request can fail with before or
after the worker (each maps to one HTTP status in ``responses``)."""

from __future__ import annotations


class RequestError(Exception):
    """An answer that is an error, raised anywhere in the front-end (a body's
    parser, admission, a worker's outcome): its status, kind, message and
    extra headers; each route's API family gives it its JSON shape."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


class WorkerUnavailable(Exception):
    """No worker can take or finish this request right now (HTTP 503)."""


class WorkerDied(WorkerUnavailable):
    """The worker process died with this request in flight (safe to retry:
    inference is idempotent)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its answer came (HTTP 504)."""
