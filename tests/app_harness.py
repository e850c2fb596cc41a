"""The front-end in-process, shared by the tests/test_app_*.py modules: a
fake backend (``InferenceBackend`` in memory), the aiohttp app driven by
aiohttp's test client, and the error shape of each API family.

No server process, no model, no torch: each test starts the app on aiohttp's
test server and talks to it in milliseconds. Importing this module starts
recording first imports of torch/transformers, so the last app test can
tell one made by the front-end from one made by another test module.
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


class _HeavyImportWatch(importlib.abc.MetaPathFinder):
    """Records every first import of torch/transformers from now on, with the
    files on the stack, so the last app test can tell an import by the
    front-end (or by the app tests) from one by another test module collected
    beside them."""

    HEAVY = ("torch", "transformers")

    def __init__(self) -> None:
        self.imports: list[tuple[str, list[str]]] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name in self.HEAVY and name not in sys.modules:  # a submodule needs its package first
            stack = traceback.extract_stack()[:-1]  # without this frame
            self.imports.append((name, [frame.filename for frame in stack]))
        return None  # never finds anything itself: the import goes on as usual


WATCH = _HeavyImportWatch()
sys.meta_path.insert(0, WATCH)
TORCH_BEFORE = "torch" in sys.modules  # another test module may have loaded it first

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from helpers import metric_samples  # noqa: E402
from inferserve.common.config import ModelSpec, ServerConfig  # noqa: E402
from inferserve.http import create_app  # noqa: E402
from inferserve.ipc import (  # noqa: E402
    Call,
    InferResult,
    ModelFacts,
    Outcome,
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
    str(HERE.parent / "test_app_"),  # the modules that use this one
)

FILL_MASK = WorkerReady(model="/models/fake", task="fill-mask", device="cpu", dtype="float32", load_seconds=1.5)
EMBEDDER = WorkerReady(model="/models/fake-embed", task="feature-extraction", device="cpu", dtype="float32",
                       load_seconds=0.5, facts=ModelFacts(embedding_dimension=8))
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
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}``, with TEI's
    top-level ``message``, ``code`` (the status) and ``error_type`` beside it."""
    assert reply.status == status, reply.body
    error = reply.json()
    assert set(error) == {"error", "message", "code", "error_type"}
    assert error["message"] == error["error"]["message"] and error["code"] == status
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
    "/": "ours", "/invocations": "ours",
    "/embed": "tei", "/embed_all": "tei", "/embed_sparse": "tei", "/similarity": "tei", "/tokenize": "tei", "/decode": "tei", "/rerank": "tei", "/predict": "tei",
    "/v1/embeddings": "openai", "/embeddings": "openai",
    "/v1/rerank": "cohere", "/v2/rerank": "cohere",
}
RERANKER = WorkerReady(model="/models/fake-ranker", task="text-ranking", device="cpu", dtype="float32",
                       load_seconds=0.5)
CLASSIFIER = WorkerReady(model="/models/fake-cls", task="text-classification", device="cpu", dtype="float32",
                         load_seconds=0.5)
# sentence-transformers models: a dense one (with a similarity function) and a SPLADE one.
ST_EMBEDDER = WorkerReady(model="/models/fake-st", task="feature-extraction", device="cpu", dtype="float32",
                          load_seconds=0.5, facts=ModelFacts(embedding_dimension=8, sentence_transformers=True,
                                                             similarity_fn_name="cosine"))
SPARSE = WorkerReady(model="/models/fake-splade", task="sparse-embedding", device="cpu", dtype="float32",
                     load_seconds=0.5, facts=ModelFacts(pooling="splade", sentence_transformers=True, sparse=True,
                                                        similarity_fn_name="dot"))
# A model that serves each route, and a body it accepts.
SERVED_BY = {
    "/": (FILL_MASK, {"inputs": "a [MASK]"}),
    "/invocations": (FILL_MASK, {"inputs": "a [MASK]"}),
    "/embed": (EMBEDDER, {"inputs": "a"}),
    "/embed_all": (EMBEDDER, {"inputs": "a"}),
    "/embed_sparse": (SPARSE, {"inputs": "a"}),
    "/similarity": (ST_EMBEDDER, {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    "/tokenize": (EMBEDDER, {"inputs": "a"}),
    "/decode": (EMBEDDER, {"ids": [101, 102]}),
    "/rerank": (RERANKER, {"query": "q", "texts": ["a", "b"]}),
    "/predict": (CLASSIFIER, {"inputs": "a"}),
    "/v1/embeddings": (EMBEDDER, {"input": "a"}),
    "/embeddings": (EMBEDDER, {"input": "a"}),
    "/v1/rerank": (RERANKER, {"query": "q", "documents": ["a", "b"]}),
    "/v2/rerank": (RERANKER, {"query": "q", "documents": ["a", "b"]}),
}


def generated_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
