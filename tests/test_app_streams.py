"""Server-Sent Events framing; and, last of the app tests (the modules run in name order),
the check that none of them imported torch."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import pytest

from app_harness import (
    FRONT_END_FILES, TORCH_BEFORE, WATCH, assert_our_error, FakeBackend, post_json, Reply, StreamItem,
)
from inferserve.frontend.errors import DeadlineExceeded, WorkerDied, WorkerUnavailable
from inferserve.ipc import InferResult, Outcome, StreamChunk


# ---- Server-Sent Events ----------------------------------------------------------


def sse_frames(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n"), body
    return body[:-2].split(b"\n\n")


def data_of(frame: bytes) -> Any:
    assert frame.startswith(b"data: "), frame
    return orjson.loads(frame[len(b"data: "):])


FINAL = InferResult(0, Outcome.OK, b'[{"generated_text": "once upon a"}]')


def stream_request(items: list[StreamItem], **headers: str) -> Reply:
    body = {"inputs": "once", "stream": True}
    return post_json("/", body, FakeBackend(stream_items=items), headers=dict(headers))[0]


def test_a_stream_is_one_data_event_per_token_then_the_full_text() -> None:
    reply = stream_request([StreamChunk(0, 0, 11, " upon"), StreamChunk(0, 1, 12, ""), StreamChunk(0, 2, 13, " a"),
                            FINAL], **{"X-Request-Id": "s-1"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.headers["X-Request-Id"] == "s-1"
    frames = sse_frames(reply.body)
    assert frames[0] == b'data: {"index":0,"token":{"id":11,"text":" upon"},"generated_text":null}'
    assert [data_of(f) for f in frames] == [
        {"index": 0, "token": {"id": 11, "text": " upon"}, "generated_text": None},
        {"index": 1, "token": {"id": 12, "text": ""}, "generated_text": None},
        {"index": 2, "token": {"id": 13, "text": " a"}, "generated_text": None},
        {"index": 3, "token": None, "generated_text": "once upon a", "output": [{"generated_text": "once upon a"}]},
    ]


def test_a_stream_without_tokens_sends_only_the_final_event() -> None:
    reply = stream_request([FINAL])
    assert reply.status == 200
    assert [data_of(f) for f in sse_frames(reply.body)] == [
        {"index": 0, "token": None, "generated_text": "once upon a", "output": [{"generated_text": "once upon a"}]},
    ]


@pytest.mark.parametrize("first,status,kind", [
    (InferResult(0, Outcome.INVALID_PARAMETERS, message="bogus"), 422, "invalid_parameters"),
    (InferResult(0, Outcome.INTERNAL, message="boom"), 500, "internal_error"),
    (WorkerUnavailable("no worker"), 503, "unavailable"),
    (DeadlineExceeded("too late"), 504, "deadline_exceeded"),
], ids=["outcome 422", "outcome 500", "unavailable", "deadline"])
def test_a_stream_error_before_the_first_token_keeps_its_status(first: StreamItem, status: int, kind: str) -> None:
    reply = stream_request([first], **{"X-Request-Id": "s-2"})
    assert_our_error(reply, status, kind)
    assert reply.headers["X-Request-Id"] == "s-2"
    assert ("Retry-After" in reply.headers) == (status == 503)


@pytest.mark.parametrize("failure,kind,message", [
    (InferResult(0, Outcome.INTERNAL, message="device lost"), "internal_error", "device lost"),
    (InferResult(0, Outcome.DEADLINE_EXCEEDED, message="deadline"), "deadline_exceeded", "deadline"),
    (WorkerDied("worker 0 died"), "unavailable", "worker 0 died"),
    (DeadlineExceeded("no answer in time"), "deadline_exceeded", "no answer in time"),
], ids=["outcome 500", "outcome 504", "worker died", "deadline"])
def test_a_stream_error_after_the_first_token_ends_with_an_error_event(failure: StreamItem, kind: str,
                                                                      message: str) -> None:
    reply = stream_request([StreamChunk(0, 0, 11, " upon"), failure])
    assert reply.status == 200
    first, last = sse_frames(reply.body)
    assert data_of(first)["token"] == {"id": 11, "text": " upon"}
    assert last.startswith(b"event: error\ndata: ")
    assert orjson.loads(last.split(b"data: ", 1)[1]) == {"error": message, "type": kind}


def test_a_stream_that_ends_without_an_answer_is_500() -> None:
    reply = stream_request([])
    assert assert_our_error(reply, 500, "internal_error")["error"] == "the stream ended without an answer"


def test_an_unexpected_exception_mid_stream_ends_with_an_error_event() -> None:
    reply = stream_request([StreamChunk(0, 0, 11, " upon"), RuntimeError("bug")])
    assert reply.status == 200
    assert sse_frames(reply.body)[-1].startswith(b"event: error\n")


# ---- last: the front-end never imports torch --------------------------------------


def test_zz_nothing_here_imported_torch() -> None:
    """Runs last of the app tests. The front-end (and these tests) must never
    import torch or transformers; another test module collected beside this
    one may have, so imports are told apart by who made them."""
    sys.meta_path.remove(WATCH)
    ours = {name: files for name, stack in WATCH.imports
            if (files := sorted({f for f in stack if f.startswith(FRONT_END_FILES)}))}
    assert not ours, f"imported from the front-end or these tests: {dict(list(ours.items())[:2])}"
    if not TORCH_BEFORE and not WATCH.imports:
        assert "torch" not in sys.modules
        assert "transformers" not in sys.modules
