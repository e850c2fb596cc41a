"""Headers, deadlines, and the call the parser hands the backend."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app_harness import (
    EMBEDDER, FORM, OK_BODY, assert_openai_error, assert_our_error, FakeBackend, fetch, generated_id, make_app,
    one, post_json, Reply, serve,
)
from inferserve.ipc import Call, EmbedOptions, InferResult, Outcome, RequestKind


# ---- headers ------------------------------------------------------------------


def test_answer_headers_come_from_the_result_and_the_body_is_passed_verbatim() -> None:
    reply, _ = post_json("/", {"inputs": "a"})
    assert reply.status == 200
    assert reply.body == OK_BODY
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["X-Batch-Size"] == "3"
    assert reply.headers["X-Queue-Time-Ms"] == "1.250"
    assert reply.headers["X-Compute-Time-Ms"] == "4.500"
    assert generated_id(reply.headers["X-Request-Id"])


@pytest.mark.parametrize("given", ["abc-123", "x" * 128, "req:42/a b"], ids=["plain", "128 chars", "punctuation"])
def test_a_valid_request_id_is_echoed(given: str) -> None:
    reply, _ = post_json("/", {"inputs": "a"}, headers={"X-Request-Id": given})
    assert reply.headers["X-Request-Id"] == given
    bad, _ = post_json("/", {"inputs": ""}, headers={"X-Request-Id": given})
    assert bad.status == 400 and bad.headers["X-Request-Id"] == given


@pytest.mark.parametrize("given", [None, "", "x" * 129, "a\tb", "é"],
                         ids=["missing", "empty", "too long", "control char", "non-ascii"])
def test_a_missing_or_invalid_request_id_is_replaced(given: str | None) -> None:
    app, _ = make_app()
    headers = {**FORM, **({"X-Request-Id": given} if given is not None else {})}

    async def scenario(client: TestClient) -> list[Reply]:
        return [await fetch(client, "POST", "/", data=b"a", headers=headers) for _ in range(2)]

    first, second = serve(app, scenario)
    assert generated_id(first.headers["X-Request-Id"]) and generated_id(second.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


# ---- deadlines ---------------------------------------------------------------


def _timeout_given(backend: FakeBackend) -> float:
    """What the backend was given, as seconds left when it was called."""
    (seen,) = backend.seen
    return seen.deadline - seen.at


def test_a_shorter_x_request_timeout_becomes_the_deadline() -> None:
    _, backend = post_json("/", {"inputs": "a"}, headers={"X-Request-Timeout": "0.5"}, request_timeout_s=30)
    assert 0.3 < _timeout_given(backend) <= 0.5


def test_a_longer_x_request_timeout_is_capped_at_the_flag() -> None:
    _, backend = post_json("/", {"inputs": "a"}, headers={"X-Request-Timeout": "100"}, request_timeout_s=2)
    assert 1.8 < _timeout_given(backend) <= 2


def test_without_x_request_timeout_the_flag_is_the_deadline() -> None:
    _, backend = post_json("/", {"inputs": "a"}, request_timeout_s=7)
    assert 6.8 < _timeout_given(backend) <= 7


def test_a_stream_gets_the_deadline_too() -> None:
    backend = FakeBackend(stream_items=[InferResult(0, Outcome.OK, b'[{"generated_text": "a"}]')])
    post_json("/", {"inputs": "a", "stream": True}, backend, headers={"X-Request-Timeout": "0.5"})
    assert 0.3 < _timeout_given(backend) <= 0.5


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "", "1e-400"])
def test_an_invalid_x_request_timeout_is_400(value: str) -> None:
    reply, backend = post_json("/", {"inputs": "a"}, headers={"X-Request-Timeout": value})
    assert_our_error(reply, 400, "invalid_timeout")
    assert backend.seen == []


def test_an_invalid_x_request_timeout_on_openai_embeddings_is_openai_shaped() -> None:
    reply, _ = post_json("/v1/embeddings", {"input": "a"}, FakeBackend(info=EMBEDDER),
                         headers={"X-Request-Timeout": "soon"})
    assert_openai_error(reply, 400, "invalid_timeout")


# ---- what the parser hands the backend ------------------------------------------

CALLS = [
    # (id, path, body, content type, expected call)
    ("raw text", "/", b"test [MASK]", "application/x-www-form-urlencoded",
     Call(RequestKind.PIPELINE, ("test [MASK]",), {}, True)),
    ("raw text/plain", "/", "caf\u00e9 [MASK]".encode(), "text/plain",
     Call(RequestKind.PIPELINE, ("caf\u00e9 [MASK]",), {}, True)),
    ("raw octet-stream", "/", b"bytes", "application/octet-stream", Call(RequestKind.PIPELINE, ("bytes",), {}, True)),
    ("json single", "/", {"inputs": "a [MASK]"}, "application/json",
     Call(RequestKind.PIPELINE, ("a [MASK]",), {}, True)),
    ("json single with parameters", "/", {"inputs": "a [MASK]", "parameters": {"top_k": 2}}, "application/json",
     Call(RequestKind.PIPELINE, ("a [MASK]",), {"top_k": 2}, True)),
    ("json null parameters", "/", {"inputs": "a", "parameters": None}, "application/json",
     Call(RequestKind.PIPELINE, ("a",), {}, True)),
    ("json list", "/", {"inputs": ["a", "b"], "parameters": {"top_k": 1}}, "application/json",
     Call(RequestKind.PIPELINE, ("a", "b"), {"top_k": 1}, False)),
    ("json list of one", "/", {"inputs": ["a"]}, "application/json", Call(RequestKind.PIPELINE, ("a",), {}, False)),
    ("json object input", "/", {"inputs": {"question": "q?", "context": "c."}}, "application/json",
     Call(RequestKind.PIPELINE, ({"question": "q?", "context": "c."},), {}, True)),
    ("+json type", "/", {"inputs": "a"}, "application/vnd.api+json", Call(RequestKind.PIPELINE, ("a",), {}, True)),
    ("stream", "/", {"inputs": "once", "parameters": {"max_new_tokens": 3}, "stream": True}, "application/json",
     Call(RequestKind.STREAM, ("once",), {"max_new_tokens": 3}, True)),
    ("stream false", "/", {"inputs": "once", "stream": False}, "application/json",
     Call(RequestKind.PIPELINE, ("once",), {}, True)),
    ("embed", "/embed", {"inputs": ["a", "b"], "normalize": False}, "application/json",
     Call(RequestKind.EMBED, ("a", "b"), embed=EmbedOptions(normalize=False, response="tei"))),
    ("embed single, TEI's defaults", "/embed", {"inputs": "a"}, "application/json",
     Call(RequestKind.EMBED, ("a",), embed=EmbedOptions(normalize=True, response="tei"))),
    ("openai string", "/v1/embeddings", {"input": "a", "model": "m"}, "application/json",
     Call(RequestKind.EMBED, ("a",), embed=EmbedOptions(response="openai", model_name="m"))),
    ("openai list, served name", "/v1/embeddings", {"input": ["a", "b"]}, "application/json",
     Call(RequestKind.EMBED, ("a", "b"), embed=EmbedOptions(response="openai", model_name="served-name"))),
    ("openai token ids", "/v1/embeddings", {"input": [101, 7592, 102]}, "application/json",
     Call(RequestKind.EMBED, ([101, 7592, 102],), embed=EmbedOptions(response="openai", model_name="served-name"))),
    ("openai token id lists", "/v1/embeddings", {"input": [[101, 102], [7]]}, "application/json",
     Call(RequestKind.EMBED, ([101, 102], [7]), embed=EmbedOptions(response="openai", model_name="served-name"))),
    ("openai base64, dimensions", "/v1/embeddings",
     {"input": "a", "encoding_format": "base64", "dimensions": 4, "model": "m"}, "application/json",
     Call(RequestKind.EMBED, ("a",),
          embed=EmbedOptions(dimensions=4, response="openai", encoding_format="base64", model_name="m"))),
    ("openai null encoding_format", "/v1/embeddings", {"input": "a", "encoding_format": None}, "application/json",
     Call(RequestKind.EMBED, ("a",), embed=EmbedOptions(response="openai", model_name="served-name"))),
]


@pytest.mark.parametrize("path,body,content_type,expected", [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_the_parser_hands_the_backend_this_call(path: str, body: Any, content_type: str, expected: Call) -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    backend = FakeBackend(info=EMBEDDER, stream_items=[InferResult(0, Outcome.OK, b'[{"generated_text": "x"}]')])
    reply, _ = one("POST", path, backend, {"served_model_name": "served-name"},
                   data=data, headers={"Content-Type": content_type})
    assert reply.status == 200, reply.body
    (seen,) = backend.seen
    assert seen.call == expected


def test_a_raw_body_without_a_content_type_is_text() -> None:
    reply, backend = one("POST", "/", data=b"no type [MASK]", skip_auto_headers=["Content-Type"])
    assert reply.status == 200
    assert backend.seen[0].call == Call(RequestKind.PIPELINE, ("no type [MASK]",), {}, True)
