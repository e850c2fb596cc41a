"""Several models in one server: --model NAME=PATH (repeated), a worker pool
per model, requests choosing one by the body's "model" or the
/models/{name}/... prefix, /v1/models, /ready for all, /info and /metrics
per model.

First in-process over fake backends (the routing, every API's 404 shape,
admission per model), then one real server with two tiny models."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from helpers import ServerProcess, metric_samples, scrape
from inferserve.__main__ import build_parser, config_from_args
from inferserve.common.config import ModelSpec, NamedModel, ServerConfig
from inferserve.http import create_app
from inferserve.ipc import Call, InferResult, ModelFacts, Outcome, WorkerReady

EMBEDDER = WorkerReady(model="/m/emb", task="feature-extraction", device="cpu", dtype="float32",
                       load_seconds=0.1, facts=ModelFacts(embedding_dimension=4))
RANKER = WorkerReady(model="/m/rank", task="text-ranking", device="cpu", dtype="float32", load_seconds=0.1)


@dataclass
class Fake:
    """A backend that answers with its own name, so a reply says who served it."""

    name: str
    info: WorkerReady
    ready: bool = True
    in_flight: int = 0
    seen: list[Call] = field(default_factory=list)

    async def infer(self, call: Call, deadline: float) -> InferResult:
        self.seen.append(call)
        return InferResult(0, Outcome.OK, orjson.dumps({"served_by": self.name}), batch_size=1)

    async def stream(self, call: Call, deadline: float):  # pragma: no cover - not streamed here
        yield InferResult(0, Outcome.OK, b"[]")


def two_models(**config: Any) -> tuple[web.Application, dict[str, Fake]]:
    fakes = {"emb": Fake("emb", EMBEDDER), "org/rank": Fake("org/rank", RANKER)}
    models = (NamedModel("emb", ModelSpec("/m/emb")), NamedModel("org/rank", ModelSpec("/m/rank")))
    app = create_app(ServerConfig(model=models[0].spec, models=models, **config), backend=fakes)
    return app, fakes


def run(app: web.Application, *requests: tuple[str, str, Any] | Callable[[], None]) -> list[tuple[int, Any]]:
    """Each (method, path, JSON body or None) in turn: [(status, parsed body)];
    a function among them is called at its turn (it changes a fake)."""

    async def main() -> list[tuple[int, Any]]:
        async with TestClient(TestServer(app)) as client:
            replies = []
            for request in requests:
                if callable(request):
                    request()
                    continue
                method, path, body = request
                kw = {} if body is None else {"data": orjson.dumps(body), "headers": {"Content-Type": "application/json"}}
                async with client.request(method, path, **kw) as resp:
                    raw = await resp.read()
                    replies.append((resp.status, orjson.loads(raw) if resp.content_type == "application/json"
                                    else raw.decode()))
            return replies

    return asyncio.run(main())


def test_the_body_or_the_prefix_chooses_the_model_and_bare_routes_the_first() -> None:
    app, fakes = two_models()
    replies = run(
        app,
        ("POST", "/v1/embeddings", {"input": "a"}),  # no model: the first
        ("POST", "/v1/embeddings", {"input": "a", "model": "emb"}),
        ("POST", "/v1/rerank", {"model": "org/rank", "query": "q", "documents": ["a"]}),
        ("POST", "/v2/rerank", {"model": "org/rank", "query": "q", "documents": ["a"]}),
        ("POST", "/models/org/rank/rerank", {"query": "q", "texts": ["a"]}),  # a name may hold "/"
        ("POST", "/models/org/rank/v1/rerank", {"query": "q", "documents": ["a"]}),
        ("POST", "/models/emb/embed", {"inputs": "a"}),
        ("POST", "/embed", {"inputs": "a"}),
    )
    assert [body["served_by"] for _, body in replies] == ["emb", "emb", "org/rank", "org/rank", "org/rank",
                                                          "org/rank", "emb", "emb"]
    # the echoed name: the body's, else the model's own
    assert [c.embed.model_name for c in fakes["emb"].seen[:2]] == ["emb", "emb"]
    assert fakes["org/rank"].seen[-1].rerank.model_name == "org/rank"


def test_an_unknown_model_is_404_in_each_apis_shape_and_names_the_models() -> None:
    app, fakes = two_models()
    (openai, cohere, tei, ours, info, ready, retrieve) = run(
        app,
        ("POST", "/v1/embeddings", {"input": "a", "model": "nope"}),
        ("POST", "/v2/rerank", {"model": "nope", "query": "q", "documents": ["a"]}),
        ("POST", "/models/nope/embed", {"inputs": "a"}),
        ("POST", "/models/nope/", {"inputs": "a"}),
        ("GET", "/models/nope/info", None),
        ("GET", "/models/nope/ready", None),
        ("GET", "/v1/models/nope", None),
    )
    message = "the model 'nope' does not exist; this server serves 'emb', 'org/rank'"
    assert openai == (404, {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                      "code": "model_not_found"},
                            "message": message, "code": 404, "error_type": "Validation"})  # TEI's beside OpenAI's
    assert retrieve == openai
    assert cohere == (404, {"message": message})
    assert tei == (404, {"error": message, "error_type": "Validation"})
    for reply in (ours, info, ready):
        assert reply == (404, {"error": message, "type": "model_not_found"})
    assert fakes["emb"].seen == fakes["org/rank"].seen == []


def test_v1_models_lists_them_in_openais_shape() -> None:
    app, _ = two_models()
    ((status, body), (one_status, one)) = run(app, ("GET", "/v1/models", None), ("GET", "/v1/models/org/rank", None))
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["emb", "org/rank"]
    for model in body["data"]:
        assert model["object"] == "model" and model["owned_by"] == "inferserve"
        assert abs(model["created"] - time.time()) < 60
    assert (one_status, one) == (200, body["data"][1])


def test_ready_waits_for_every_model_and_admission_is_per_model() -> None:
    app, fakes = two_models(max_queue=2)
    fakes["org/rank"].ready = False
    fakes["emb"].in_flight = 2  # emb is full
    rerank = ("POST", "/v1/rerank", {"model": "org/rank", "query": "q", "documents": ["a"]})
    (ready, emb_ready, rank_ready, full, none_can, loading, all_ready) = run(
        app,
        ("GET", "/ready", None),
        ("GET", "/models/emb/ready", None),
        ("GET", "/models/org/rank/ready", None),
        ("POST", "/v1/embeddings", {"input": "a", "model": "emb"}),
        rerank,
        lambda: setattr(fakes["emb"], "in_flight", 0),
        rerank,
        lambda: setattr(fakes["org/rank"], "ready", True),
        ("GET", "/ready", None),
    )
    assert ready == (503, {"error": "loading: org/rank", "type": "unavailable"})
    assert emb_ready == (200, {"status": "ready"})
    assert rank_ready[0] == 503
    overloaded = "the server is overloaded; retry later"
    assert full == (503, {"error": {"message": overloaded, "type": "server_error", "param": None, "code": "unavailable"},
                          "message": overloaded, "code": 503, "error_type": "Overloaded"})
    # no model could take it: refused before the body is parsed, with the first model's reason
    assert none_can == (503, {"message": "the server is overloaded; retry later"})
    assert loading == (503, {"message": "the model org/rank is not ready"})
    assert all_ready == (200, {"status": "ready"})


def test_info_per_model_and_metrics_with_the_model_label() -> None:
    app, _ = two_models()
    (bare, rank, _, _, metrics) = run(
        app,
        ("GET", "/info", None),
        ("GET", "/models/org/rank/info", None),
        ("POST", "/models/org/rank/rerank", {"query": "q", "texts": ["a"]}),
        ("POST", "/v1/rerank", {"model": "org/rank", "query": "q", "documents": ["a"]}),
        ("GET", "/metrics", None),
    )
    assert (bare[1]["served_model_name"], bare[1]["model_id"], bare[1]["models"]) == ("emb", "/m/emb", ["emb", "org/rank"])
    assert (rank[1]["served_model_name"], rank[1]["task"], rank[1]["model_id"]) == ("org/rank", "text-ranking", "/m/rank")
    samples = metric_samples(metrics[1])
    assert samples['inferserve_requests_total{model="org/rank",route="/models/{name}/rerank",status="200"}'] == 1
    assert samples['inferserve_requests_total{model="org/rank",route="/v1/rerank",status="200"}'] == 1
    assert samples['inferserve_requests_total{model="emb",route="/info",status="200"}'] == 1
    for name in ("emb", "org/rank"):
        assert samples[f'inferserve_queue_depth{{model="{name}"}}'] == 0
        assert samples[f'inferserve_worker_up{{model="{name}"}}'] == 1
        assert samples[f'inferserve_worker_restarts_total{{model="{name}"}}'] == 0
    assert samples['inferserve_queue_wait_seconds_count{model="org/rank"}'] == 2


@pytest.mark.parametrize("argv,names", [
    ([], ["sentence-transformers/all-MiniLM-L6-v2"]),
    (["--model", "org/model"], ["org/model"]),
    (["--model", "org/model", "--served-model-name", "mine"], ["mine"]),
    (["--model", "a=org/model", "--model", "b=/no/such/dir", "--model", "other/model"], ["a", "b", "other/model"]),
])
def test_model_flags_name_the_models(argv: list[str], names: list[str]) -> None:
    config = config_from_args(build_parser().parse_args(argv))
    assert [m.name for m in config.served_models()] == names
    assert config.model == config.served_models()[0].spec and config.served_model_name == names[0]


def test_a_directory_is_named_by_its_name_and_may_hold_an_equals_sign(tmp_path: Path) -> None:
    odd = tmp_path / "x=y"
    odd.mkdir()
    config = config_from_args(build_parser().parse_args(["--model", str(odd), "--model", f"n={tmp_path}"]))
    assert [(m.name, m.spec.model) for m in config.served_models()] == [("x=y", str(odd)), ("n", str(tmp_path))]


@pytest.mark.parametrize("argv,error", [
    (["--model", "a=x", "--model", "a=y"], "two models are named 'a'"),
    (["--model", "x", "--model", "x"], "two models are named 'x'"),
    (["--model", "x", "--model", "y", "--served-model-name", "n"], "--served-model-name names a single model"),
])
def test_model_flags_that_cannot_work_are_refused(argv: list[str], error: str) -> None:
    with pytest.raises(SystemExit, match=error):
        config_from_args(build_parser().parse_args(argv))


# ---- one real server, two tiny models ----------------------------------------------


@pytest.fixture(scope="module")
def two_model_server(embedding_model: Path, fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(
        ["--model", f"emb={embedding_model}", "--model", f"mlm={fill_mask_model}", "--max-batch-delay-ms", "2"],
        tmp_path_factory.mktemp("logs") / "two-models.log",
    ).start(timeout=120)
    # /ready is 200 only once both models are: never before either says so itself
    assert all(server.get(f"/models/{name}/info").json()["ready"] for name in ("emb", "mlm"))
    yield server
    server.stop()


def test_each_model_answers_by_name_on_its_own_worker(two_model_server: ServerProcess) -> None:
    server = two_model_server
    assert len(server.worker_pids()) == 2  # a pool per model
    by_body = server.post_json({"input": ["hello world"], "model": "emb", "encoding_format": "float"},
                               path="/v1/embeddings")
    assert by_body.status == 200, by_body.body
    assert by_body.json()["model"] == "emb" and len(by_body.json()["data"][0]["embedding"]) == 32
    by_prefix = server.post_json({"inputs": ["hello world"], "normalize": False}, path="/models/emb/embed")
    assert by_prefix.json()[0] == pytest.approx(by_body.json()["data"][0]["embedding"], abs=1e-5)
    filled = server.post_json({"inputs": "hello [MASK]"}, path="/models/mlm/")
    assert filled.status == 200 and "sequence" in filled.json()[0]
    # the fill-mask model makes no sentence embeddings, and says so in OpenAI's shape
    refused = server.post_json({"input": "hello", "model": "mlm"}, path="/v1/embeddings")
    assert refused.status == 400 and refused.json()["error"]["code"] == "not_supported"
    # bare routes are the first model's
    assert server.post_json({"inputs": "hello"}, path="/embed").json()[0] == pytest.approx(
        server.post_json({"inputs": "hello"}, path="/models/emb/embed").json()[0])
    unknown = server.post_json({"input": "hello", "model": "nope"}, path="/v1/embeddings")
    assert unknown.status == 404 and "'emb', 'mlm'" in unknown.json()["error"]["message"]
    assert server.post_json({"inputs": "x [MASK]"}, path="/models/nope/").status == 404


def test_v1_models_through_the_openai_client(two_model_server: ServerProcess) -> None:
    import openai

    client = openai.OpenAI(base_url=two_model_server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["emb", "mlm"]
    assert client.models.retrieve("mlm").owned_by == "inferserve"
    vectors = client.embeddings.create(model="emb", input=["a", "b"])
    assert vectors.model == "emb" and len(vectors.data) == 2
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="a")


def test_info_and_metrics_per_model(two_model_server: ServerProcess, embedding_model: Path,
                                    fill_mask_model: Path) -> None:
    server = two_model_server
    bare, emb, mlm = (server.get(path).json() for path in ("/info", "/models/emb/info", "/models/mlm/info"))
    assert bare == {**emb, "uptime_s": bare["uptime_s"]}
    assert (emb["model_id"], emb["task"], emb["served_model_name"]) == (str(embedding_model), "feature-extraction", "emb")
    assert (mlm["model_id"], mlm["task"], mlm["served_model_name"]) == (str(fill_mask_model), "fill-mask", "mlm")
    assert bare["models"] == ["emb", "mlm"]

    before = scrape(server)
    for i in range(3):
        assert server.post_json({"inputs": f"metric {i} [MASK]"}, path="/models/mlm/").status == 200
    after = scrape(server)
    assert after['inferserve_items_computed_total{model="mlm"}'] - before['inferserve_items_computed_total{model="mlm"}'] == 3
    assert after['inferserve_items_computed_total{model="emb"}'] == before['inferserve_items_computed_total{model="emb"}']
    route = 'inferserve_requests_total{model="mlm",route="/models/{name}/",status="200"}'
    assert after[route] - before.get(route, 0) == 3
    for name in ("emb", "mlm"):
        assert after[f'inferserve_worker_up{{model="{name}"}}'] == 1
        assert after[f'inferserve_queue_depth{{model="{name}"}}'] == 0
    assert after['inferserve_batch_size_count{model="mlm"}'] > before['inferserve_batch_size_count{model="mlm"}']


def test_a_model_that_cannot_load_stops_the_server(server_factory, fill_mask_model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # there, but no model in it: the worker's load fails
    server = server_factory("--model", f"ok={fill_mask_model}", "--model", f"bad={tmp_path / 'empty'}",
                            "--task", "fill-mask", wait_ready=False)
    assert server.process.wait(90) == 2
    assert "cannot serve: model bad:" in server.log()
