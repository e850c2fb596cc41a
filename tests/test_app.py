"""The front-end in-process: the aiohttp app over a fake backend.

Every HTTP behaviour that does not cross into the worker is pinned here:
error statuses and shapes, headers, deadlines, what the parser hands the
backend, metrics, SSE framing, the probes. No server process, no model, no
torch: each test starts the app on aiohttp's test server and talks to it
with aiohttp's test client, in milliseconds.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest


class _HeavyImportWatch(importlib.abc.MetaPathFinder):
    """Records every first import of torch/transformers while this module is
    loaded, with the files on the stack, so the last test can tell an import
    by the front-end (or by this module) from one by another test module
    collected beside it."""

    HEAVY = ("torch", "transformers")

    def __init__(self) -> None:
        self.imports: list[tuple[str, list[str]]] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name in self.HEAVY and name not in sys.modules:  # a submodule needs its package first
            stack = traceback.extract_stack()[:-1]  # without this frame
            self.imports.append((name, [frame.filename for frame in stack]))
        return None  # never finds anything itself: the import goes on as usual


_WATCH = _HeavyImportWatch()
sys.meta_path.insert(0, _WATCH)
_TORCH_BEFORE = "torch" in sys.modules  # another test module may have loaded it first

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from helpers import metric_samples  # noqa: E402
from inferserve.__main__ import build_parser, config_from_args  # noqa: E402
from inferserve.common.config import ModelSpec, ServerConfig  # noqa: E402
from inferserve.frontend.errors import DeadlineExceeded, WorkerDied, WorkerUnavailable  # noqa: E402
from inferserve.frontend.state import METRICS_KEY, STATE_KEY  # noqa: E402
from inferserve.http import create_app  # noqa: E402
from inferserve.ipc import (  # noqa: E402
    BatchReport,
    Call,
    EmbedOptions,
    InferResult,
    Outcome,
    RequestKind,
    StreamChunk,
    WorkerReady,
)

T = TypeVar("T")
HERE = Path(__file__).resolve()
FRONT_END_FILES = (
    str(HERE.parent.parent / "inferserve" / "frontend"),
    str(HERE.parent.parent / "inferserve" / "common"),
    str(HERE.parent.parent / "inferserve" / "http.py"),
    str(HERE.parent.parent / "inferserve" / "ipc.py"),
    str(HERE.parent.parent / "inferserve" / "__main__.py"),
    str(HERE),
)

FILL_MASK = WorkerReady(model="/models/fake", task="fill-mask", device="cpu", dtype="float32", load_seconds=1.5)
EMBEDDER = WorkerReady(model="/models/fake-embed", task="feature-extraction", device="cpu", dtype="float32",
                       load_seconds=0.5, embedding_dimension=8)
OK_BODY = b'[{"score":0.5,"token":7,"token_str":"x","sequence":"a x"}]'
OK = InferResult(0, Outcome.OK, OK_BODY, batch_size=3, queue_ms=1.25, compute_ms=4.5)
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what curl -d sends


# ---- the fake backend -----------------------------------------------------


@dataclass
class Seen:
    """One call the backend received, and when (time.monotonic())."""

    call: Call
    deadline: float
    at: float


Answer = InferResult | BaseException | Callable[[Call], InferResult]
StreamItem = StreamChunk | InferResult | BaseException


@dataclass
class FakeBackend:
    """``InferenceBackend`` in-process: answers each call with ``answer``
    (a result, an exception to raise, or a function of the call), streams
    ``stream_items`` (an exception among them is raised there), and records
    what it was asked. Given a ``hold`` event, ``infer`` waits until it is set."""

    ready: bool = True
    info: WorkerReady | None = FILL_MASK
    answer: Answer = OK
    stream_items: list[StreamItem] = field(default_factory=list)
    in_flight: int = 0
    seen: list[Seen] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def infer(self, call: Call, deadline: float) -> InferResult:
        self.seen.append(Seen(call, deadline, time.monotonic()))
        self.in_flight += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
            answer = self.answer(call) if callable(self.answer) else self.answer
            if isinstance(answer, BaseException):
                raise answer
            return answer
        finally:
            self.in_flight -= 1

    async def stream(self, call: Call, deadline: float) -> AsyncIterator[StreamChunk | InferResult]:
        self.seen.append(Seen(call, deadline, time.monotonic()))
        for item in self.stream_items:
            if isinstance(item, BaseException):
                raise item
            yield item


# ---- driving the app --------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Any  # CIMultiDict: case-insensitive
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def make_app(backend: FakeBackend | None = None, **config: Any) -> tuple[web.Application, FakeBackend]:
    backend = backend if backend is not None else FakeBackend()
    return create_app(ServerConfig(model=ModelSpec(model="fake"), **config), backend=backend), backend


def serve(app: web.Application, scenario: Callable[[TestClient], Awaitable[T]]) -> T:
    """Run ``scenario(client)`` against ``app`` on a fresh event loop."""

    async def main() -> T:
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


async def fetch(client: TestClient, method: str, path: str, **kw: Any) -> Reply:
    async with client.request(method, path, **kw) as resp:
        return Reply(resp.status, resp.headers.copy(), await resp.read())


def one(method: str, path: str, backend: FakeBackend | None = None, config: dict[str, Any] | None = None,
        **kw: Any) -> tuple[Reply, FakeBackend]:
    """A fresh app, one request."""
    app, backend = make_app(backend, **(config or {}))
    return serve(app, lambda client: fetch(client, method, path, **kw)), backend


def post_json(path: str, document: Any, backend: FakeBackend | None = None, headers: dict[str, str] | None = None,
              **config: Any) -> tuple[Reply, FakeBackend]:
    return one("POST", path, backend, config, data=orjson.dumps(document), headers={**JSON, **(headers or {})})


async def scrape(client: TestClient) -> dict[str, float]:
    reply = await fetch(client, "GET", "/metrics")
    assert reply.status == 200
    return metric_samples(reply.body.decode())


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until ``predicate()`` holds (the server shares it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def assert_our_error(reply: Reply, status: int, kind: str) -> dict[str, Any]:
    """``{"error": message, "type": kind}``, with no internals in it."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()
    assert set(error) == {"error", "type"}
    assert error["type"] == kind
    assert isinstance(error["error"], str) and error["error"]
    assert "Traceback" not in error["error"] and ".py" not in error["error"]
    return error


def assert_openai_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""
    assert reply.status == status, reply.body
    error = reply.json()
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["code"] == code
    assert error["error"]["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["error"]["param"] is None
    assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    return error


def assert_tei_error(reply: Reply, status: int, error_type: str) -> dict[str, Any]:
    """text-embeddings-inference's ``{"error": message, "error_type": ...}``."""
    assert reply.status == status, reply.body
    error = reply.json()
    assert set(error) == {"error", "error_type"}
    assert error["error_type"] == error_type
    assert isinstance(error["error"], str) and error["error"]
    return error


def assert_cohere_error(reply: Reply, status: int) -> dict[str, Any]:
    """Cohere's ``{"message": ...}``."""
    assert reply.status == status, reply.body
    error = reply.json()
    assert set(error) == {"message"} and isinstance(error["message"], str) and error["message"]
    return error


def error_message(path: str, reply: Reply, status: int, kind: str) -> str:
    """Check ``reply`` is ``status`` in the shape of ``path``'s API family
    (``kind`` is ours; TEI and Cohere spell it their way, or not at all)."""
    family = FAMILY[path]
    if family == "ours":
        return assert_our_error(reply, status, kind)["error"]
    if family == "openai":
        return assert_openai_error(reply, status, kind)["error"]["message"]
    if family == "cohere":
        return assert_cohere_error(reply, status)["message"]
    default = "Backend" if status >= 500 else "Validation"
    tei_type = {"unavailable": "Unhealthy", "empty_input": "Empty"}.get(kind, default)
    return assert_tei_error(reply, status, tei_type)["error"]


# Each POST route's error shape: its API family's.
FAMILY = {
    "/": "ours",
    "/embed": "tei", "/embed_all": "tei", "/tokenize": "tei", "/decode": "tei", "/rerank": "tei", "/predict": "tei",
    "/v1/embeddings": "openai",
    "/v1/rerank": "cohere", "/v2/rerank": "cohere",
}
RERANKER = WorkerReady(model="/models/fake-ranker", task="text-ranking", device="cpu", dtype="float32",
                       load_seconds=0.5)
CLASSIFIER = WorkerReady(model="/models/fake-cls", task="text-classification", device="cpu", dtype="float32",
                         load_seconds=0.5)
# A model that serves each route, and a body it accepts.
SERVED_BY = {
    "/": (FILL_MASK, {"inputs": "a [MASK]"}),
    "/embed": (EMBEDDER, {"inputs": "a"}),
    "/embed_all": (EMBEDDER, {"inputs": "a"}),
    "/tokenize": (EMBEDDER, {"inputs": "a"}),
    "/decode": (EMBEDDER, {"ids": [101, 102]}),
    "/rerank": (RERANKER, {"query": "q", "texts": ["a", "b"]}),
    "/predict": (CLASSIFIER, {"inputs": "a"}),
    "/v1/embeddings": (EMBEDDER, {"input": "a"}),
    "/v1/rerank": (RERANKER, {"query": "q", "documents": ["a", "b"]}),
    "/v2/rerank": (RERANKER, {"query": "q", "documents": ["a", "b"]}),
}


def generated_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


# ---- errors: the parser -----------------------------------------------------

# Each parse error on its route, answered in that route's API family's shape.
PARSE_ERRORS = [
    # (route, id, body, content type, status, type)
    # POST /: ours.
    ("/", "malformed json", b'{"inputs": ', "application/json", 400, "invalid_json"),
    ("/", "json not an object", b'["a"]', "application/json", 400, "invalid_request"),
    ("/", "missing inputs", b'{"input": "x"}', "application/json", 400, "missing_inputs"),
    ("/", "empty string", b'{"inputs": ""}', "application/json", 400, "empty_input"),
    ("/", "blank string", b'{"inputs": "  \\n "}', "application/json", 400, "empty_input"),
    ("/", "empty list", b'{"inputs": []}', "application/json", 400, "empty_input"),
    ("/", "empty string in a list", b'{"inputs": ["a", ""]}', "application/json", 400, "empty_input"),
    ("/", "number input", b'{"inputs": 42}', "application/json", 400, "invalid_input"),
    ("/", "null input", b'{"inputs": null}', "application/json", 400, "invalid_input"),
    ("/", "number in a list", b'{"inputs": ["a", 3]}', "application/json", 400, "invalid_input"),
    ("/", "empty object input", b'{"inputs": {}}', "application/json", 400, "invalid_input"),
    ("/", "object with a number", b'{"inputs": {"question": "q", "context": 1}}', "application/json", 400,
     "invalid_input"),
    ("/", "parameters not an object", b'{"inputs": "a", "parameters": 3}', "application/json", 400,
     "invalid_parameters"),
    ("/", "stream not a bool", b'{"inputs": "a", "stream": "yes"}', "application/json", 400, "invalid_request"),
    ("/", "stream of a list", b'{"inputs": ["a", "b"], "stream": true}', "application/json", 400, "invalid_request"),
    ("/", "stream of an object", b'{"inputs": {"text": "a"}, "stream": true}', "application/json", 400,
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
    ("/v1/embeddings", "not an object", b'"a"', "application/json", 400, "invalid_request"),
    ("/v1/embeddings", "missing input", b'{"inputs": "a"}', "application/json", 400, "missing_inputs"),
    ("/v1/embeddings", "empty list", b'{"input": []}', "application/json", 400, "empty_input"),
    ("/v1/embeddings", "empty token list", b'{"input": [[]]}', "application/json", 400, "invalid_input"),
    ("/v1/embeddings", "mixed ids and text", b'{"input": [1, "a"]}', "application/json", 400, "invalid_input"),
    ("/v1/embeddings", "bool token ids", b'{"input": [[true, 2]]}', "application/json", 400, "invalid_input"),
    ("/v1/embeddings", "bad encoding_format", b'{"input": "a", "encoding_format": "hex"}', "application/json", 400,
     "invalid_parameters"),
    ("/v1/embeddings", "zero dimensions", b'{"input": "a", "dimensions": 0}', "application/json",
     400, "invalid_parameters"),
    ("/v1/embeddings", "bool dimensions", b'{"input": "a", "dimensions": true}', "application/json",
     400, "invalid_parameters"),
    ("/v1/embeddings", "model not a string", b'{"input": "a", "model": 3}', "application/json",
     400, "invalid_parameters"),
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


# ---- errors: routing, auth, readiness, draining, admission ---------------------


def test_unknown_route_and_wrong_method_are_json_with_allow() -> None:
    app, _ = make_app()

    async def scenario(client: TestClient) -> list[Reply]:
        return [await fetch(client, *request) for request in
                (("GET", "/nope"), ("GET", "/"), ("POST", "/health"), ("PUT", "/v1/embeddings"))]

    missing, get_root, post_health, put_openai = serve(app, scenario)
    assert_our_error(missing, 404, "not_found")
    assert "Allow" not in missing.headers
    assert_our_error(get_root, 405, "method_not_allowed")
    assert get_root.headers["Allow"] == "POST"
    assert_our_error(post_health, 405, "method_not_allowed")
    assert set(post_health.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert put_openai.status == 405 and put_openai.headers["Allow"] == "POST"


def test_api_key_guards_everything_but_the_probes() -> None:
    app, backend = make_app(api_key="s3cret")
    body = {"data": orjson.dumps({"inputs": "a"})}

    async def scenario(client: TestClient) -> dict[str, Reply]:
        return {
            "none": await fetch(client, "POST", "/", **body, headers=JSON),
            "wrong": await fetch(client, "POST", "/", **body, headers={**JSON, "Authorization": "Bearer nope"}),
            "not bearer": await fetch(client, "POST", "/", **body, headers={**JSON, "Authorization": "s3cret"}),
            "right": await fetch(client, "POST", "/", **body, headers={**JSON, "Authorization": "Bearer s3cret"}),
            "/health": await fetch(client, "GET", "/health"),
            "/ready": await fetch(client, "GET", "/ready"),
            "/metrics": await fetch(client, "GET", "/metrics"),
            "/info": await fetch(client, "GET", "/info"),
            "/embed": await fetch(client, "POST", "/embed", **body, headers=JSON),
            "/openapi.json": await fetch(client, "GET", "/openapi.json"),
        }

    replies = serve(app, scenario)
    for name in ("none", "wrong", "not bearer", "/metrics", "/info", "/embed"):
        if name == "/embed":  # in its API family's shape, as every error there
            assert_tei_error(replies[name], 401, "Validation")
        else:
            assert_our_error(replies[name], 401, "unauthorized")
        assert replies[name].headers["WWW-Authenticate"] == "Bearer"
    assert replies["right"].status == 200
    assert replies["/health"].status == 200 and replies["/ready"].status == 200
    assert replies["/openapi.json"].status == 200  # documentation stays readable
    assert len(backend.seen) == 1  # only the request with the key reached the backend


def test_the_api_key_flag_and_environment_variable_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from_flag = config_from_args(build_parser().parse_args(["--model", "fake", "--api-key", "k1"]))
    monkeypatch.setenv("INFERSERVE_API_KEY", "k2")
    from_env = config_from_args(build_parser().parse_args(["--model", "fake"]))
    assert (from_flag.api_key, from_env.api_key) == ("k1", "k2")
    app = create_app(from_env, backend=FakeBackend())

    async def scenario(client: TestClient) -> tuple[Reply, Reply]:
        denied = await fetch(client, "POST", "/", data=b"a", headers={**FORM, "Authorization": "Bearer k1"})
        allowed = await fetch(client, "POST", "/", data=b"a", headers={**FORM, "Authorization": "Bearer k2"})
        return denied, allowed

    denied, allowed = serve(app, scenario)
    assert denied.status == 401 and allowed.status == 200


def test_not_ready_is_503_for_requests_and_ready_but_not_health() -> None:
    backend = FakeBackend(ready=False)
    app, _ = make_app(backend)

    async def scenario(client: TestClient) -> tuple[Reply, Reply, Reply]:
        return (await fetch(client, "POST", "/", data=b"a", headers=FORM),
                await fetch(client, "GET", "/ready"), await fetch(client, "GET", "/health"))

    answer, ready, health = serve(app, scenario)
    assert assert_our_error(answer, 503, "unavailable")["error"] == "the model is not ready"
    assert answer.headers["Retry-After"] == "1"
    assert assert_our_error(ready, 503, "unavailable")["error"] == "the model is loading"
    assert ready.headers["Retry-After"] == "1"
    assert health.status == 200
    assert backend.seen == []


def test_draining_is_503_with_retry_after_and_ready_says_so() -> None:
    app, backend = make_app()
    app[STATE_KEY].draining = True

    async def scenario(client: TestClient) -> tuple[Reply, Reply, Reply]:
        return (await fetch(client, "POST", "/", data=b"a", headers=FORM),
                await fetch(client, "GET", "/ready"), await fetch(client, "GET", "/health"))

    answer, ready, health = serve(app, scenario)
    assert assert_our_error(answer, 503, "unavailable")["error"] == "the server is shutting down"
    assert answer.headers["Retry-After"] == "1"
    assert assert_our_error(ready, 503, "unavailable")["error"] == "draining"
    assert health.status == 200
    assert backend.seen == []


def test_a_full_queue_gets_503_without_calling_the_backend() -> None:
    reply, backend = post_json("/", {"inputs": "a"}, FakeBackend(in_flight=3), max_queue=3)
    assert assert_our_error(reply, 503, "unavailable")["error"] == "the server is overloaded; retry later"
    assert reply.headers["Retry-After"] == "1"
    assert backend.seen == []


def test_admission_counts_requests_held_by_the_backend() -> None:
    backend = FakeBackend(hold=asyncio.Event())
    app, _ = make_app(backend, max_queue=2)

    async def scenario(client: TestClient) -> tuple[list[Reply], Reply, int]:
        held = [asyncio.create_task(fetch(client, "POST", "/", data=b"a", headers=FORM)) for _ in range(2)]
        await eventually(lambda: backend.in_flight == 2)
        rejected = await fetch(client, "POST", "/", data=b"b", headers=FORM)
        calls = len(backend.seen)
        backend.hold.set()
        return await asyncio.gather(*held), rejected, calls

    held, rejected, calls_when_rejected = serve(app, scenario)
    assert_our_error(rejected, 503, "unavailable")
    assert calls_when_rejected == 2
    assert [r.status for r in held] == [200, 200]


def test_admission_holds_for_a_request_whose_body_was_still_arriving() -> None:
    backend = FakeBackend(hold=asyncio.Event())
    app, _ = make_app(backend, max_queue=1)
    body_done = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"slow "
        await body_done.wait()
        yield b"body"

    async def scenario(client: TestClient) -> tuple[Reply, int]:
        slow = asyncio.create_task(fetch(client, "POST", "/", data=slow_body(), headers=FORM))
        # its handler has started, and passed admission (no await between the
        # two), once the in-flight gauge counts it beside the scrape itself
        deadline = time.monotonic() + 5
        while (await scrape(client))["inferserve_in_flight_requests"] < 2:
            assert time.monotonic() < deadline
        fast = asyncio.create_task(fetch(client, "POST", "/", data=b"fast", headers=FORM))
        await eventually(lambda: backend.in_flight == 1)
        body_done.set()
        await eventually(lambda: slow.done() or backend.in_flight == 2)
        most = backend.in_flight
        backend.hold.set()
        await fast
        return await slow, most

    slow, most_in_flight = serve(app, scenario)
    assert most_in_flight <= 1
    assert_our_error(slow, 503, "unavailable")


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


# ---- metrics ------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status() -> None:
    app, _ = make_app(max_inputs=2)

    async def scenario(client: TestClient) -> tuple[dict[str, float], dict[str, float]]:
        before = await scrape(client)
        for request in [
            ("POST", "/", {"data": b"a", "headers": FORM}),
            ("POST", "/", {"data": b"b", "headers": FORM}),
            ("POST", "/", {"data": b"{", "headers": JSON}),
            ("POST", "/", {"data": orjson.dumps({"inputs": ["a"] * 3}), "headers": JSON}),
            ("POST", "/embed", {"data": b"x", "headers": FORM}),
            ("GET", "/health", {}),
            ("GET", "/nope", {}),
        ]:
            await fetch(client, request[0], request[1], **request[2])
        return before, await scrape(client)

    before, after = serve(app, scenario)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('inferserve_requests_total{route="/",status="200"}') == 2
    assert delta('inferserve_requests_total{route="/",status="400"}') == 1
    assert delta('inferserve_requests_total{route="/",status="413"}') == 1
    assert delta('inferserve_requests_total{route="/embed",status="415"}') == 1
    assert delta('inferserve_requests_total{route="/health",status="200"}') == 1
    assert delta('inferserve_requests_total{route="unmatched",status="404"}') == 1
    # the first scrape is counted by the time of the second
    assert after['inferserve_requests_total{route="/metrics",status="200"}'] == 1
    assert delta('inferserve_request_duration_seconds_count{route="/"}') == 4
    assert delta("inferserve_queue_wait_seconds_count") == 2  # one per answer the worker gave
    assert delta("inferserve_queue_wait_seconds_sum") == pytest.approx(2 * 0.00125)


def test_a_handler_failure_and_an_auth_failure_are_counted_with_their_status() -> None:
    app, _ = make_app(FakeBackend(answer=RuntimeError("bug")), api_key="k")

    async def scenario(client: TestClient) -> dict[str, float]:
        auth = {"Authorization": "Bearer k"}
        await fetch(client, "POST", "/", data=b"a", headers={**FORM, **auth})
        await fetch(client, "POST", "/", data=b"a", headers=FORM)
        return metric_samples((await fetch(client, "GET", "/metrics", headers=auth)).body.decode())

    samples = serve(app, scenario)
    assert samples['inferserve_requests_total{route="/",status="500"}'] == 1
    assert samples['inferserve_requests_total{route="/",status="401"}'] == 1


def test_queue_depth_and_worker_up_read_the_backend_at_scrape_time() -> None:
    backend = FakeBackend()
    app, _ = make_app(backend)

    async def scenario(client: TestClient) -> list[tuple[float, float]]:
        seen = []
        for in_flight, ready in [(0, True), (5, True), (2, False)]:
            backend.in_flight, backend.ready = in_flight, ready
            samples = await scrape(client)
            seen.append((samples["inferserve_queue_depth"], samples["inferserve_worker_up"]))
        return seen

    assert serve(app, scenario) == [(0, 1), (5, 1), (2, 0)]


def test_in_flight_gauge_counts_requests_being_handled() -> None:
    backend = FakeBackend(hold=asyncio.Event())
    app, _ = make_app(backend)

    async def scenario(client: TestClient) -> tuple[float, float]:
        held = asyncio.create_task(fetch(client, "POST", "/", data=b"a", headers=FORM))
        await eventually(lambda: backend.in_flight == 1)
        during = (await scrape(client))["inferserve_in_flight_requests"]
        backend.hold.set()
        await held
        return during, (await scrape(client))["inferserve_in_flight_requests"]

    during, after = serve(app, scenario)
    assert (during, after) == (2, 1)  # the held request and the scrape itself; then the scrape alone


def test_batch_reports_restarts_answers_and_retries_are_recorded_via_the_metrics_object() -> None:
    app, _ = make_app()
    metrics = app[METRICS_KEY]
    metrics.observe_batch(BatchReport(size=3, padded_tokens=30, compute_ms=12.0), "fake")
    metrics.observe_batch(BatchReport(size=1, padded_tokens=5, compute_ms=2.0), "fake")
    metrics.observe_answer(0, "fake")
    metrics.observe_answer(1, "fake")
    metrics.observe_answer(1, "fake")
    metrics.observe_restart("fake")
    metrics.observe_retry("fake")
    samples = serve(app, scrape)
    assert samples["inferserve_batch_size_count"] == 2
    assert samples["inferserve_batch_size_sum"] == 4
    assert samples['inferserve_batch_size_bucket{le="1.0"}'] == 1
    assert samples["inferserve_items_computed_total"] == 4
    assert samples["inferserve_batch_padded_tokens_sum"] == 35
    assert samples["inferserve_batch_compute_seconds_count"] == 2
    assert samples["inferserve_batch_compute_seconds_sum"] == pytest.approx(0.014)
    assert samples['inferserve_worker_answers_total{model="fake",worker="0"}'] == 1
    assert samples['inferserve_worker_answers_total{worker="1"}'] == 2
    assert samples["inferserve_worker_restarts_total"] == 1
    assert samples["inferserve_request_retries_total"] == 1


def test_metrics_content_type_is_prometheus_text() -> None:
    reply, _ = one("GET", "/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")


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


# ---- probes and /info -----------------------------------------------------------


def test_health_and_ready() -> None:
    app, backend = make_app()

    async def scenario(client: TestClient) -> list[Reply]:
        return [await fetch(client, "GET", "/health"), await fetch(client, "GET", "/ready"),
                await fetch(client, "HEAD", "/health")]

    health, ready, head = serve(app, scenario)
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    assert head.status == 200


def test_info_reports_the_worker_and_the_limits() -> None:
    reply, _ = one("GET", "/info", FakeBackend(info=EMBEDDER), {
        "max_queue": 77, "max_inputs": 9, "max_body_bytes": 1234, "request_timeout_s": 12.0,
        "served_model_name": "served-name"})
    info = reply.json()
    assert reply.status == 200
    expected = {
        "model": "/models/fake-embed", "served_model_name": "served-name", "task": "feature-extraction",
        "device": "cpu", "dtype": "float32", "embedding_dimension": 8, "ready": True, "workers": 1,
        "max_batch_size": 32, "max_batch_delay_ms": 5.0, "batch_wait": "adaptive",
        "max_queue": 77, "max_inputs": 9, "max_body_bytes": 1234, "request_timeout_s": 12.0,
    }
    assert {k: info[k] for k in expected} == expected
    assert set(info["versions"]) >= {"inferserve", "torch", "transformers", "aiohttp"}
    assert info["uptime_s"] >= 0


def test_info_before_any_worker_reports_uses_the_config() -> None:
    app = create_app(ServerConfig(model=ModelSpec(model="some/model", task="fill-mask", device="cuda:1")),
                     backend=FakeBackend(ready=False, info=None))
    reply = serve(app, lambda client: fetch(client, "GET", "/info"))
    info = reply.json()
    assert (info["model"], info["task"], info["device"], info["dtype"], info["ready"]) == (
        "some/model", "fill-mask", "cuda:1", None, False)


# ---- last: the front-end never imports torch --------------------------------------


def test_zz_nothing_here_imported_torch() -> None:
    """Runs last in this module. The front-end (and these tests) must never
    import torch or transformers; another test module collected beside this
    one may have, so imports are told apart by who made them."""
    sys.meta_path.remove(_WATCH)
    ours = {name: files for name, stack in _WATCH.imports
            if (files := sorted({f for f in stack if f.startswith(FRONT_END_FILES)}))}
    assert not ours, f"imported from the front-end or these tests: {dict(list(ours.items())[:2])}"
    if not _TORCH_BEFORE and not _WATCH.imports:
        assert "torch" not in sys.modules
        assert "transformers" not in sys.modules


def test_errors_raised_before_a_handler_take_the_routes_family_shape() -> None:
    app, _ = make_app()

    async def scenario(client: TestClient) -> dict[str, Reply]:
        return {path: await fetch(client, "GET", path) for path in ("/v1/embeddings", "/embed", "/v2/rerank", "/")}

    replies = serve(app, scenario)
    assert assert_openai_error(replies["/v1/embeddings"], 405, "method_not_allowed")
    assert assert_tei_error(replies["/embed"], 405, "Validation")
    assert assert_cohere_error(replies["/v2/rerank"], 405)
    assert assert_our_error(replies["/"], 405, "method_not_allowed")
