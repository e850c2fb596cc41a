"""Every error the front-end answers, in the route's API family's shape: the parser's, body
size, the backend's exceptions and the worker's outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app_harness import (
    EMBEDDER, FAMILY, FORM, JSON, SERVED_BY, assert_cohere_error, assert_openai_error, assert_our_error,
    assert_tei_error, error_message, FakeBackend, fetch, generated_id, make_app, one, post_json, Reply, serve,
)
from inferserve.frontend.errors import DeadlineExceeded, WorkerDied, WorkerUnavailable
from inferserve.ipc import Call, InferResult, Outcome, RequestKind


# ---- errors: the parser -----------------------------------------------------

# Each parse error on its route, answered in that route's API family's shape.
PARSE_ERRORS = [
    # (route, id, body, content type, status, type)
    # POST /: ours.
    ("/", "malformed json", b'{"inputs": ', "application/json", 400, "invalid_json"),
    ("/", "json not an object", b'["a"]', "application/json", 422, "invalid_request"),
    ("/", "missing inputs", b'{"parameters": {}}', "application/json", 422, "missing_field"),
    ("/", "unknown field", b'{"input": "x"}', "application/json", 422, "unknown_field"),
    ("/", "empty string", b'{"inputs": ""}', "application/json", 400, "empty_input"),
    ("/", "blank string", b'{"inputs": "  \\n "}', "application/json", 400, "empty_input"),
    ("/", "empty list", b'{"inputs": []}', "application/json", 400, "empty_input"),
    ("/", "empty string in a list", b'{"inputs": ["a", ""]}', "application/json", 400, "empty_input"),
    ("/", "number input", b'{"inputs": 42}', "application/json", 422, "invalid_request"),
    ("/", "null input", b'{"inputs": null}', "application/json", 422, "missing_field"),
    ("/", "number in a list", b'{"inputs": ["a", 3]}', "application/json", 422, "invalid_request"),
    ("/", "empty object input", b'{"inputs": {}}', "application/json", 422, "invalid_request"),
    ("/", "object with a number", b'{"inputs": {"question": "q", "context": 1}}', "application/json", 422,
     "invalid_request"),
    ("/", "parameters not an object", b'{"inputs": "a", "parameters": 3}', "application/json", 422,
     "invalid_request"),
    ("/", "stream not a bool", b'{"inputs": "a", "stream": "yes"}', "application/json", 422, "invalid_request"),
    ("/", "stream of a list", b'{"inputs": ["a", "b"], "stream": true}', "application/json", 422, "invalid_request"),
    ("/", "stream of an object", b'{"inputs": {"text": "a"}, "stream": true}', "application/json", 422,
     "invalid_request"),
    ("/", "invalid utf-8", b"\xff\xfe caf\xc3\x28", "text/plain", 400, "invalid_encoding"),
    ("/", "empty raw body", b"", "text/plain", 400, "empty_input"),
    ("/", "blank raw body", b" \n\t ", "application/x-www-form-urlencoded", 400, "empty_input"),
    ("/", "too many inputs", orjson.dumps({"inputs": ["a"] * 5}), "application/json", 413, "too_many_inputs"),
    ("/", "unsupported type", b"\x89PNG", "image/png", 415, "unsupported_media_type"),
    ("/", "multipart", b"--x--", "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
    # /embed is text-embeddings-inference's: its statuses (422 for a body of the
    # wrong shape) and its error shape. (Its full contract is TEI's tests' job.)
    ("/embed", "raw text", b"hello", "text/plain", 415, "Validation"),
    ("/embed", "malformed json", b"{", "application/json", 400, "Validation"),
    ("/embed", "missing inputs", b'{"input": "a"}', "application/json", 422, "Validation"),
    ("/embed", "empty list", b'{"inputs": []}', "application/json", 400, "Empty"),
    ("/embed", "object input", b'{"inputs": {"text": "a"}}', "application/json", 422, "Validation"),
    ("/embed", "too many inputs", orjson.dumps({"inputs": ["a"] * 5}), "application/json", 413, "Validation"),
    # /v1/embeddings: OpenAI's.
    ("/v1/embeddings", "raw text", b"hello", "text/plain", 415, "unsupported_media_type"),
    ("/v1/embeddings", "malformed json", b"{", "application/json", 400, "invalid_json"),
    ("/v1/embeddings", "not an object", b'"a"', "application/json", 422, "invalid_request"),
    ("/v1/embeddings", "missing input", b'{"model": "a"}', "application/json", 422, "missing_field"),
    ("/v1/embeddings", "unknown field", b'{"inputs": "a"}', "application/json", 422, "unknown_field"),
    ("/v1/embeddings", "empty list", b'{"input": []}', "application/json", 400, "empty_input"),
    ("/v1/embeddings", "empty token list", b'{"input": [[]]}', "application/json", 422, "invalid_request"),
    ("/v1/embeddings", "mixed ids and text", b'{"input": [1, "a"]}', "application/json", 422, "invalid_request"),
    ("/v1/embeddings", "bool token ids", b'{"input": [[true, 2]]}', "application/json", 422, "invalid_request"),
    ("/v1/embeddings", "bad encoding_format", b'{"input": "a", "encoding_format": "hex"}', "application/json", 422,
     "invalid_request"),
    ("/v1/embeddings", "zero dimensions", b'{"input": "a", "dimensions": 0}', "application/json",
     422, "invalid_request"),
    ("/v1/embeddings", "bool dimensions", b'{"input": "a", "dimensions": true}', "application/json",
     422, "invalid_request"),
    ("/v1/embeddings", "model not a string", b'{"input": "a", "model": 3}', "application/json",
     422, "invalid_request"),
    ("/v1/embeddings", "too many inputs", orjson.dumps({"input": ["a"] * 5}), "application/json",
     413, "too_many_inputs"),
]

ERROR_SHAPE = {"/": assert_our_error, "/embed": assert_tei_error, "/v1/embeddings": assert_openai_error}


@pytest.mark.parametrize("path,body,content_type,status,kind", [(row[0], *row[2:]) for row in PARSE_ERRORS],
                         ids=[f"{row[0]} {row[1]}" for row in PARSE_ERRORS])
def test_parse_errors_are_refused_before_the_worker_in_the_routes_shape(
        path: str, body: bytes, content_type: str, status: int, kind: str) -> None:
    backend = FakeBackend(info=EMBEDDER) if path != "/" else None
    reply, backend = one("POST", path, backend, {"max_inputs": 4}, data=body, headers={"Content-Type": content_type})
    ERROR_SHAPE[path](reply, status, kind)
    assert generated_id(reply.headers["X-Request-Id"])  # errors carry the id too
    assert "X-Batch-Size" not in reply.headers
    assert backend.seen == []  # refused before the worker


def test_every_post_route_has_an_error_family() -> None:
    app, _ = make_app()
    posts = {route.resource.canonical for route in app.router.routes() if route.method == "POST"}
    bare = {path for path in posts if not path.startswith("/models/{name}/")}
    assert bare == set(FAMILY) == set(SERVED_BY)
    assert posts - bare == {"/models/{name}" + path for path in FAMILY}  # each model's, by its name


@pytest.mark.parametrize("path", sorted(FAMILY))
def test_errors_take_the_shape_of_the_routes_api_family(path: str) -> None:
    """The same failures on every route, each in its family's shape: a
    malformed body, not ready, the worker gone, a worker's internal error."""
    info, body = SERVED_BY[path]
    malformed = one("POST", path, FakeBackend(info=info), data=b'{"inputs": ', headers=JSON)[0]
    assert error_message(path, malformed, 400, "invalid_json").startswith("malformed JSON")
    not_ready, backend = post_json(path, body, FakeBackend(ready=False, info=info))
    assert error_message(path, not_ready, 503, "unavailable") == "the model is not ready"
    assert not_ready.headers["Retry-After"] == "1" and backend.seen == []
    gone = post_json(path, body, FakeBackend(info=info, answer=WorkerDied("worker 0 died")))[0]
    assert error_message(path, gone, 503, "unavailable") == "worker 0 died"
    assert gone.headers["Retry-After"] == "1"
    internal = InferResult(0, Outcome.INTERNAL, message="device lost")
    failed, backend = post_json(path, body, FakeBackend(info=info, answer=internal))
    assert len(backend.seen) == 1
    if FAMILY[path] == "tei":  # TEI: a failed inference is 424 Backend
        assert assert_tei_error(failed, 424, "Backend")["error"] == "device lost"
    else:
        assert error_message(path, failed, 500, "internal_error") == "device lost"
    for reply in (malformed, not_ready, gone, failed):
        assert reply.headers["Content-Type"].startswith("application/json")
        assert generated_id(reply.headers["X-Request-Id"])


def test_ours_and_openais_shape_for_the_same_error() -> None:
    malformed = {"data": b'{"inputs": ', "headers": JSON}
    ours = one("POST", "/", FakeBackend(info=EMBEDDER), **malformed)[0]
    openai = one("POST", "/v1/embeddings", FakeBackend(info=EMBEDDER), **malformed)[0]
    assert_our_error(ours, 400, "invalid_json")
    assert_openai_error(openai, 400, "invalid_json")
    assert openai.json()["error"]["message"] == ours.json()["error"]


def test_embeddings_on_a_model_without_them_are_refused_before_the_worker() -> None:
    reply, backend = post_json("/v1/embeddings", {"input": "a"})
    assert_openai_error(reply, 400, "not_supported")
    assert backend.seen == []
    reply, backend = post_json("/embed", {"inputs": "a"})
    assert_tei_error(reply, 424, "Backend")  # TEI: "not an embedding model"
    assert backend.seen == []
    # before any worker has reported, the worker is the one to say so
    reply, backend = post_json("/v1/embeddings", {"input": "a"}, FakeBackend(info=None))
    assert reply.status == 200 and len(backend.seen) == 1


# ---- errors: body size ------------------------------------------------------

LIMIT = 100


def test_a_body_of_exactly_the_limit_is_accepted_one_more_byte_is_413() -> None:
    app, backend = make_app(max_body_bytes=LIMIT)

    async def scenario(client: TestClient) -> tuple[Reply, Reply, Reply]:
        at_limit = await fetch(client, "POST", "/", data=b"x" * LIMIT, headers=FORM)
        over = await fetch(client, "POST", "/", data=b"x" * (LIMIT + 1), headers=FORM)
        openai = await fetch(client, "POST", "/v1/embeddings", data=b" " * (LIMIT + 1), headers=JSON)
        return at_limit, over, openai

    at_limit, over, openai = serve(app, scenario)
    assert at_limit.status == 200
    assert_our_error(over, 413, "payload_too_large")
    assert_openai_error(openai, 413, "payload_too_large")
    assert len(backend.seen) == 1


async def _chunks(total: int, size: int = 16) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


@pytest.mark.parametrize("size", [LIMIT + 2, LIMIT * 50])
def test_a_chunked_body_over_the_limit_is_413(size: int) -> None:
    reply, backend = one("POST", "/", config={"max_body_bytes": LIMIT}, data=_chunks(size), headers=FORM)
    assert_our_error(reply, 413, "payload_too_large")
    assert backend.seen == []


def test_a_chunked_body_of_exactly_the_limit_is_accepted() -> None:
    reply, backend = one("POST", "/", config={"max_body_bytes": LIMIT}, data=_chunks(LIMIT), headers=FORM)
    assert reply.status == 200
    assert backend.seen[0].call.inputs == ("x" * LIMIT,)


def test_a_chunked_body_one_byte_over_the_limit_is_413() -> None:
    reply, backend = one("POST", "/", config={"max_body_bytes": LIMIT}, data=_chunks(LIMIT + 1), headers=FORM)
    assert_our_error(reply, 413, "payload_too_large")


def test_a_large_body_parsed_off_the_loop_gives_the_same_call() -> None:
    texts = [f"input {i} " + "y" * 2000 for i in range(40)]  # ~80 KB: over the inline-parse threshold
    reply, backend = post_json("/", {"inputs": texts, "parameters": {"top_k": 2}})
    assert reply.status == 200
    assert backend.seen[0].call == Call(RequestKind.PIPELINE, tuple(texts), {"top_k": 2}, False)


# ---- errors: the backend and the worker's outcomes ----------------------------


@pytest.mark.parametrize("exc,message", [
    (WorkerUnavailable("no worker is ready"), "no worker is ready"),
    (WorkerDied("worker 0 died with this request in flight"), "worker 0 died with this request in flight"),
    (WorkerUnavailable(), "no worker is available"),
], ids=["unavailable", "died", "no message"])
def test_worker_unavailable_or_died_is_503_with_retry_after(exc: Exception, message: str) -> None:
    reply, _ = post_json("/", {"inputs": "a"}, FakeBackend(answer=exc), headers={"X-Request-Id": "r-503"})
    assert assert_our_error(reply, 503, "unavailable")["error"] == message
    assert reply.headers["Retry-After"] == "1"
    assert reply.headers["X-Request-Id"] == "r-503"


def test_deadline_exceeded_is_504_naming_the_timeout() -> None:
    reply, _ = post_json("/", {"inputs": "a"}, FakeBackend(answer=DeadlineExceeded()),
                         headers={"X-Request-Timeout": "0.25"})
    assert assert_our_error(reply, 504, "deadline_exceeded")["error"] == "no answer within 0.25s"
    assert "Retry-After" not in reply.headers


OUTCOMES = [
    (Outcome.INVALID_INPUT, 422, "invalid_input"),
    (Outcome.INVALID_PARAMETERS, 422, "invalid_parameters"),
    (Outcome.DEADLINE_EXCEEDED, 504, "deadline_exceeded"),
    (Outcome.INTERNAL, 500, "internal_error"),
]


def test_every_non_ok_outcome_is_mapped() -> None:
    assert {o for o, _, _ in OUTCOMES} == set(Outcome) - {Outcome.OK}


@pytest.mark.parametrize("outcome,status,kind", OUTCOMES, ids=[o.value for o, _, _ in OUTCOMES])
def test_non_ok_outcomes_map_to_their_status(outcome: Outcome, status: int, kind: str) -> None:
    result = InferResult(0, outcome, message="the worker's own words", batch_size=2)
    reply, _ = post_json("/", {"inputs": "a"}, FakeBackend(answer=result))
    assert assert_our_error(reply, status, kind)["error"] == "the worker's own words"
    assert reply.headers["X-Batch-Size"] == "2"
    assert "X-Compute-Time-Ms" not in reply.headers and "Retry-After" not in reply.headers


def test_an_unhandled_backend_exception_is_500_without_details(caplog: pytest.LogCaptureFixture) -> None:
    reply, _ = post_json("/", {"inputs": "a"}, FakeBackend(answer=RuntimeError("secret /path/detail")))
    assert assert_our_error(reply, 500, "internal_error")["error"] == "internal error"
    assert "secret" not in reply.body.decode()
    assert "unhandled error on POST /" in caplog.text  # logged for us, not shown to them


def test_debug_shows_exception_details() -> None:
    reply, _ = post_json("/", {"inputs": "a"}, FakeBackend(answer=RuntimeError("the detail")), debug=True)
    assert reply.status == 500
    assert reply.json() == {"error": "RuntimeError: the detail", "type": "internal_error"}


def test_errors_raised_before_a_handler_take_the_routes_family_shape() -> None:
    app, _ = make_app()

    async def scenario(client: TestClient) -> dict[str, Reply]:
        return {path: await fetch(client, "GET", path) for path in ("/v1/embeddings", "/embed", "/v2/rerank", "/")}

    replies = serve(app, scenario)
    assert assert_openai_error(replies["/v1/embeddings"], 405, "method_not_allowed")
    assert assert_tei_error(replies["/embed"], 405, "Validation")
    assert assert_cohere_error(replies["/v2/rerank"], 405)
    assert assert_our_error(replies["/"], 405, "method_not_allowed")
