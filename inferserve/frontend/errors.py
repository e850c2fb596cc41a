"""The front-end's exception types: what a request can fail with before or
after the worker (each maps to one HTTP status in ``responses``)."""

from __future__ import annotations


class PayloadError(Exception):
    """A client error in the request (body, headers): carries the HTTP status and kind."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


class WorkerUnavailable(Exception):
    """No worker can take or finish this request right now (HTTP 503)."""


class WorkerDied(WorkerUnavailable):
    """The worker process died with this request in flight (safe to retry:
    inference is idempotent)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its answer came (HTTP 504)."""
