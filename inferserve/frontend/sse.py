"""Server-Sent Events for streaming generation (one event per token)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from ..ipc import InferResult, Outcome, StreamChunk
from .errors import DeadlineExceeded, WorkerUnavailable
from .responses import ErrorFactory, RequestError, exception_failure, failure_response, outcome_failure

log = logging.getLogger("inferserve")


async def stream_events(
    request: web.Request, items: AsyncIterator[StreamChunk | InferResult],
    headers: dict[str, str], error: ErrorFactory,
) -> web.StreamResponse:
    """Server-Sent Events: one event per generated token, then the full text.

    The response starts with the first token, so an error before it still
    gets its proper status code; an error after it ends the stream with an
    ``error`` event.
    """
    response: web.StreamResponse | None = None
    tokens = 0
    failure: RequestError | None = None
    try:
        async for item in items:
            if isinstance(item, StreamChunk):
                response = response or await _open(request, headers)
                tokens += 1
                event = {"index": item.index, "token": {"id": item.token_id, "text": item.text},
                         "generated_text": None}
                await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
                continue
            if item.outcome is not Outcome.OK:
                failure = outcome_failure(item.outcome, item.message)
                break
            output = orjson.loads(item.body)  # small: the final text only
            text = output[0].get("generated_text") if isinstance(output, list) and output else None
            final = {"index": tokens, "token": None, "generated_text": text, "output": output}
            response = response or await _open(request, headers)  # no token at all is possible
            await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
    except (WorkerUnavailable, DeadlineExceeded) as exc:
        failure = exception_failure(exc)
    except Exception:
        if response is None:
            raise  # nothing sent yet: the error middleware answers 500
        # The 200 and some tokens are out: a second response cannot follow.
        log.exception("stream failed after its first token")
        failure = RequestError(500, "internal_error", "internal error")
    if failure is not None:
        if response is None:
            return failure_response(failure, error, headers)
        await response.write(_sse_error(failure.kind, failure.message))
    if response is None:  # the worker ended the stream without a word: our bug
        return error(500, "internal_error", "the stream ended without an answer", headers)
    await response.write_eof()
    return response


async def _open(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


def _sse_error(kind: str, message: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps({"error": message, "type": kind}) + b"\n\n"
