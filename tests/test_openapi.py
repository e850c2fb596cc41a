"""``GET /openapi.json``: a valid OpenAPI 3.1 document of every route, whose
request schemas are the ones the parsers validate with
(inferserve/frontend/schemas.py).

In-process (a fake backend, no model): the document validates as OpenAPI;
every route of ``app.router`` is in it; each POST route's parser validates
with the schema the document names; and each parser accepts exactly what
its schema accepts, on bodies schemathesis draws from the document (valid
and invalid), judged by the reference ``jsonschema`` implementation rather
than the server's own jsonschema-rs. Against real servers (tiny models: a
sentence-transformers embedder, a cross-encoder): schemathesis over every
operation of the document each server serves.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from openapi_spec_validator import validate as validate_openapi

from helpers import ServerProcess, build_tiny_bert, scrape
from inferserve.common.config import ModelSpec, ServerConfig
from inferserve.frontend import cohere_api, inference_api, openai_api, openapi, schemas, tei, tei_sparse
from inferserve.frontend.errors import RequestError
from inferserve.http import create_app
from inferserve.ipc import InferResult, ModelFacts, Outcome, WorkerReady

EMBEDDER = WorkerReady(model="m", task="feature-extraction", device="cpu", dtype="float32", load_seconds=0.1,
                       facts=ModelFacts(embedding_dimension=8, sentence_transformers=True, pooling="mean"))
FILL_MASK = WorkerReady(model="m", task="fill-mask", device="cpu", dtype="float32", load_seconds=0.1)
SPLADE = WorkerReady(model="m", task="sparse-embedding", device="cpu", dtype="float32", load_seconds=0.1,
                     facts=ModelFacts(pooling="splade", sentence_transformers=True, sparse=True,
                                      similarity_fn_name="dot"))
RERANKER = WorkerReady(model="m", task="text-ranking", device="cpu", dtype="float32", load_seconds=0.1,
                       facts=ModelFacts(id2label={0: "LABEL_0"}))
CLASSIFIER = WorkerReady(model="m", task="text-classification", device="cpu", dtype="float32", load_seconds=0.1,
                         facts=ModelFacts(id2label={0: "neg", 1: "pos"}))
# The routes the brief of issue 20 names; every one must be in the document.
EXPECTED = {("post", p) for p in ("/", "/embed", "/embed_all", "/tokenize", "/decode", "/rerank", "/predict",
                                  "/v1/embeddings", "/v1/rerank", "/v2/rerank")} | {
    ("get", p) for p in ("/health", "/ready", "/info", "/metrics", "/openapi.json", "/docs")}


@dataclass
class Backend:
    """A worker that answers every call with an empty list (or one SSE answer)."""

    info: WorkerReady | None
    ready: bool = True
    in_flight: int = 0

    async def infer(self, call: Any, deadline: float) -> InferResult:
        return InferResult(0, Outcome.OK, b"[]", batch_size=1)

    async def stream(self, call: Any, deadline: float) -> Any:
        yield InferResult(0, Outcome.OK, b'[{"generated_text": "x"}]')


def make_app(info: WorkerReady | None = EMBEDDER, **config: Any) -> Any:
    return create_app(ServerConfig(model=ModelSpec(model="fake"), **config), backend=Backend(info))


def fetch(app: Any, requests: list[tuple[str, str, bytes | None, str]]) -> list[tuple[int, bytes]]:
    """Send (method, path, body, content type) requests to the app in-process."""

    async def main() -> list[tuple[int, bytes]]:
        async with TestClient(TestServer(app)) as client:
            replies = []
            for method, path, body, content_type in requests:
                headers = {"Content-Type": content_type} if content_type else {}
                async with client.request(method, path, data=body, headers=headers) as resp:
                    replies.append((resp.status, await resp.read()))
            return replies

    return asyncio.run(main())


def served_document(app: Any) -> dict[str, Any]:
    ((status, body),) = fetch(app, [("GET", "/openapi.json", None, "")])
    assert status == 200
    return json.loads(body)


# ---- the document -------------------------------------------------------------------


@pytest.mark.parametrize("info,config", [(EMBEDDER, {}), (FILL_MASK, {"api_key": "k"}), (None, {})],
                         ids=["sentence-transformers", "fill-mask with an API key", "before a worker"])
def test_the_document_is_valid_openapi_3_1(info: WorkerReady | None, config: dict[str, Any]) -> None:
    app = make_app(info, **config)
    document = openapi.build_document(app) if config else served_document(app)  # (with a key: 401 unless sent)
    validate_openapi(document)
    assert document["openapi"].startswith("3.1")
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    if config.get("api_key"):
        assert document["paths"]["/embed"]["post"]["security"] == [{"bearer": []}]
        assert "401" in document["paths"]["/embed"]["post"]["responses"]
        assert "security" not in document["paths"]["/health"]["get"]  # the probes stay open


def test_every_route_is_documented() -> None:
    app = make_app()
    assert openapi.undocumented(app) == []
    document = served_document(app)
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert routes == documented
    assert EXPECTED <= documented
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"] != "undocumented", (method, path)
            assert "200" in operation["responses"], (method, path)


def test_a_route_without_an_operation_is_reported() -> None:
    app = make_app()

    async def nothing(request: Any) -> Any:
        raise AssertionError

    app.router.add_get("/unknown", nothing)
    assert openapi.undocumented(app) == ["GET /unknown"]


def test_post_slash_takes_what_the_model_parses() -> None:
    """A sentence-transformers model reads /embed's body or the inference API's sentence-similarity body
    on POST / (handlers.infer), a SPLADE model /embed_sparse's (TEI's); other models the inference API's."""
    for info, request, text in ((EMBEDDER, "RootSentenceModelRequest", "EmbedTextBody"),
                                (SPLADE, "EmbedSparseRequest", "EmbedTextBody"),
                                (FILL_MASK, "PipelineRequest", "TextBody"), (None, "PipelineRequest", "TextBody")):
        content = served_document(make_app(info))["paths"]["/"]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"] == {"$ref": schemas.REF + request}
        assert content["text/plain"]["schema"] == {"$ref": schemas.REF + text}


def test_docs_is_a_page_that_lists_every_operation_without_a_cdn() -> None:
    app = make_app()
    ((status, body),) = fetch(app, [("GET", "/docs", None, "")])
    page = body.decode()
    assert status == 200 and page.startswith("<!doctype html>") and 'href="openapi.json"' in page
    for path, operations in openapi.build_document(app)["paths"].items():
        for method in operations:
            assert f"<td>{method.upper()}</td><td><code>{path}</code></td>" in page


def test_docs_loads_every_script_and_style_from_this_server() -> None:
    """Offline: each script and style sheet the page names is a path on this
    server (no other host), served with its type and the bundled files' bytes."""
    import re

    import swagger_ui_bundle

    page = fetch(make_app(), [("GET", "/docs", None, "")])[0][1].decode()
    assets = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page) + re.findall(r'<link[^>]*\shref="([^"]+)"', page)
    assert sorted(assets) == ["docs/swagger-ui-bundle.js", "docs/swagger-ui.css"]
    assert "://" not in page.replace('xmlns="http://', "") and "//cdn" not in page
    replies = fetch(make_app(api_key="k"), [("GET", "/" + asset, None, "") for asset in assets])  # open, as /docs
    for asset, (status, body) in zip(assets, replies):
        bundled = Path(swagger_ui_bundle.swagger_ui_path, asset.rpartition("/")[2]).read_bytes()
        assert status == 200 and body == bundled, asset
    assert fetch(make_app(), [("GET", "/docs/index.html", None, "")])[0][0] == 404  # only the two files
    assert fetch(make_app(), [("GET", "/swagger-ui.css", None, "")])[0][0] == 404


# ---- the parsers use the document's schemas -------------------------------------------

# A model that serves each POST route.
SERVER_FOR = {"/": EMBEDDER, "/embed": EMBEDDER, "/embed_all": EMBEDDER, "/tokenize": EMBEDDER,
              "/decode": EMBEDDER, "/v1/embeddings": EMBEDDER, "/rerank": RERANKER, "/v1/rerank": RERANKER,
              "/v2/rerank": RERANKER, "/predict": CLASSIFIER}


def _schema_name(content: dict[str, Any], media_type: str) -> str:
    return content[media_type]["schema"]["$ref"].rpartition("/")[2]


@pytest.mark.parametrize("path", sorted(SERVER_FOR))
def test_each_post_route_parses_with_the_schema_its_document_names(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(SERVER_FOR[path])
    content = openapi.build_document(app)["paths"][path]["post"]["requestBody"]["content"]
    used: list[str] = []
    real = schemas.validator
    monkeypatch.setattr(schemas, "validator", lambda name: (used.append(name), real(name))[1])
    name = _schema_name(content, "application/json")
    example = schemas.SCHEMAS[name]["examples"][0]
    requests = [("POST", path, orjson.dumps(example), "application/json")]
    if "text/plain" in content:
        requests.append(("POST", path, b"some text", "text/plain"))
    replies = fetch(app, requests)
    assert [status for status, _ in replies] == [200] * len(requests), replies
    expected = [name] + ([_schema_name(content, "text/plain")] if "text/plain" in content else [])
    assert used == expected


# Each request schema's parser (the test above ties routes to schemas).
PARSERS = {
    "PipelineRequest": inference_api.parse_pipeline,
    "RootSentenceModelRequest": tei_sparse.parse_root,
    "EmbedSparseRequest": tei_sparse.parse_root_sparse,
    "EmbedRequest": tei.parse_embed,
    "EmbedAllRequest": tei.parse_embed_all,
    "TokenizeRequest": tei.parse_tokenize,
    "DecodeRequest": tei.parse_decode,
    "OpenAICompatRequest": openai_api.parse_openai_embeddings,
    "RerankRequest": tei.parse_rerank,
    "CohereRerankRequest": cohere_api.parse_cohere_rerank_v2,
    "PredictRequest": tei.parse_predict,
}
ROUTE_OF = {"PipelineRequest": ("/", FILL_MASK), "RootSentenceModelRequest": ("/", EMBEDDER), "EmbedSparseRequest": ("/", SPLADE), "EmbedRequest": "/embed",
            "EmbedAllRequest": "/embed_all", "TokenizeRequest": "/tokenize", "DecodeRequest": "/decode",
            "OpenAICompatRequest": "/v1/embeddings", "RerankRequest": "/rerank",
            "CohereRerankRequest": "/v2/rerank", "PredictRequest": "/predict"}
CONFIG = ServerConfig(model=ModelSpec(model="fake"), max_inputs=10_000)  # no 413: schemas leave the limit out


def _integral_floats(value: Any) -> bool:
    """1.0 is an integer to JSON Schema; the parsers (as TEI's serde) want 1."""
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, list):
        return any(_integral_floats(v) for v in value)
    if isinstance(value, dict):
        return any(_integral_floats(v) for v in value.values())
    return False


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_each_parser_accepts_exactly_what_its_schema_accepts(name: str) -> None:
    """Bodies drawn from the document (valid ones and, in negative mode, invalid ones; JSON and, on
    POST /, raw text): the parser accepts a body iff the reference jsonschema implementation finds it
    valid."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    route = ROUTE_OF[name]
    path, info = route if isinstance(route, tuple) else (route, SERVER_FOR[route])
    document = openapi.build_document(make_app(info))
    content = document["paths"][path]["post"]["requestBody"]["content"]
    assert _schema_name(content, "application/json") == name
    reference = {media_type: jsonschema.Draft202012Validator({"$ref": schemas.REF + _schema_name(content, media_type),
                                                              "components": {"schemas": schemas.SCHEMAS}})
                 for media_type in content}
    # A copy: schemathesis may annotate the schemas it is given, and these are schemas.SCHEMAS' own dicts.
    operation = schemathesis.openapi.from_dict(copy.deepcopy(document))[path]["POST"]
    seen = {"valid": 0, "invalid": 0}

    def check(case: Any) -> None:
        media_type = case.media_type or "application/json"
        if media_type == "text/plain":
            assume(isinstance(case.body, str))
            try:
                body = case.body.encode()
            except UnicodeEncodeError:
                assume(False)  # a lone surrogate: no UTF-8 body carries it
            value = case.body
        else:
            try:
                body = orjson.dumps(case.body)
            except (TypeError, orjson.JSONEncodeError):
                assume(False)  # not JSON orjson writes (an int past 64 bits, no body at all)
            value = orjson.loads(body)  # what the parser sees (NaN is null, ...)
            assume(not _integral_floats(value))
        valid = reference[media_type].is_valid(value)
        seen["valid" if valid else "invalid"] += 1
        try:
            PARSERS[name](body, media_type, CONFIG, name)
        except RequestError as exc:
            assert not valid, f"the parser refused a body its schema accepts ({exc.status} {exc.message}): {body!r}"
            assert 400 <= exc.status < 500
        else:
            assert valid, f"the parser accepted a body its schema refuses: {body!r}"

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        run = given(case=operation.as_strategy(mode))(check)
        settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                 database=None)(run)()
    assert seen["valid"] >= 10 and seen["invalid"] >= 10, seen


# ---- schemathesis against real servers -------------------------------------------------

SENTENCE_TRANSFORMERS_FILES = {
    "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                     {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                     {"idx": 2, "name": "2", "path": "2_Normalize",
                      "type": "sentence_transformers.models.Normalize"}],
    "1_Pooling/config.json": {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True},
    "sentence_bert_config.json": {"max_seq_length": 64, "do_lower_case": False},
    "config_sentence_transformers.json": {"prompts": {"query": "query: "}},
}
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance," \
         "negative_data_rejection"
# Every route a model serves, on the server whose model serves it (the rest answer 400/424 at once).
EMBEDDING_ROUTES = (r"^(/models/\{name\})?/(embed|embed_all|tokenize|decode|v1/embeddings|ready|info)?$"
                    r"|^/(health|metrics|openapi\.json|docs|v1/models.*)$")
RANKING_ROUTES = r"^(/models/\{name\})?/(rerank|v1/rerank|v2/rerank|predict)?$"


@pytest.fixture(scope="module")
def servers(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny sentence-transformers embedder (POST / is /embed's) and a tiny cross-encoder (rerank and
    predict; POST / its pipeline), started side by side."""
    embedder = build_tiny_bert(models_dir / "tiny-sentence-transformers", "BertModel", seed=3)
    for name, content in SENTENCE_TRANSFORMERS_FILES.items():
        (embedder / name).parent.mkdir(exist_ok=True)
        (embedder / name).write_text(json.dumps(content))
    ranker = build_tiny_bert(models_dir / "tiny-openapi-cross-encoder", "BertForSequenceClassification",
                             num_labels=1)
    logs = tmp_path_factory.mktemp("logs")
    # One torch thread each: two servers and two schemathesis runs share the cores (10x faster answers
    # than oversubscribed threads spinning on a busy 2-core machine).
    flags = ["--max-inputs", "64", "--num-threads", "1"]
    started = {"embedder": ServerProcess(["--model", str(embedder), *flags], logs / "embedder.log"),
               "ranker": ServerProcess(["--model", str(ranker), *flags], logs / "ranker.log")}
    for server in started.values():
        server.start(wait_ready=False)
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _schemathesis(server: ServerProcess, paths: str, workdir: Path) -> subprocess.Popen:
    workdir.mkdir()
    # 413 (more inputs than --max-inputs) is a rejection too.
    (workdir / "schemathesis.toml").write_text(
        '[checks.negative_data_rejection]\nexpected-statuses = ["400", "404", "413", "415", "422"]\n')
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", f"{server.url}/openapi.json", "--url", server.url, "--checks", CHECKS,
        "--include-path-regex", paths, "--phases", "examples,coverage,fuzzing",
        "--max-examples", "8", "--seed", "20", "--generation-database", "none", "--no-color",
        # One worker: with two, CPython 3.11's ast.parse (hypothesis describing a lambda) can fail in
        # threads ("AST constructor recursion depth mismatch"). The two servers run side by side instead.
        "--workers", "1",
    ]
    # In workdir: schemathesis reads schemathesis.toml and keeps a .schemathesis/ cache there.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)


@pytest.mark.timeout(360)
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    servers: dict[str, ServerProcess], tmp_path: Path,
) -> None:
    before = {name: scrape(server) for name, server in servers.items()}
    started = time.monotonic()
    runs = {"embedder": _schemathesis(servers["embedder"], EMBEDDING_ROUTES, tmp_path / "embedder"),
            "ranker": _schemathesis(servers["ranker"], RANKING_ROUTES, tmp_path / "ranker")}
    outputs = {name: run.communicate(timeout=300)[0] for name, run in runs.items()}
    elapsed = time.monotonic() - started
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}:\n{outputs[name][-8000:]}"
        assert " passed" in outputs[name] and "failed" not in outputs[name].rpartition("Test cases:")[2]
    print(f"schemathesis: {elapsed:.1f}s;", {n: o.rpartition("Test cases:")[2].splitlines()[1].strip()
                                              for n, o in outputs.items()})
    # The servers' own count: no 5xx on any route.
    for name, server in servers.items():
        after = scrape(server)
        bad = {k: v - before[name].get(k, 0.0) for k, v in after.items()
               if k.startswith("inferserve_requests_total") and 'status="5' in k}
        assert not {k: n for k, n in bad.items() if n}, (name, bad)
