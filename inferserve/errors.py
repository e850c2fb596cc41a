"""How failures look to clients: status codes and JSON error bodies."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from .ipc import Outcome

RETRY_AFTER_S = "1"

OUTCOME_STATUS = {
    Outcome.INVALID_INPUT: (422, "invalid_input"),
    Outcome.INVALID_PARAMETERS: (422, "invalid_parameters"),
    Outcome.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
    Outcome.INTERNAL: (500, "internal_error"),
}

# (status, kind, message, headers) -> response; each API family has its shape.
ErrorFactory = Callable[[int, str, str, dict[str, str]], web.Response]


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Our error shape: {"error": message, "type": kind}."""
    body = orjson.dumps({"error": message, "type": kind})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def openai_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """OpenAI's error shape, for the /v1 routes."""
    error_type = "invalid_request_error" if status < 500 else "server_error"
    body = orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": kind}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
