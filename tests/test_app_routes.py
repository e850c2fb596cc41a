"""The route table is the one source of the routes (inferserve/frontend/routes.py),
and every JSON route is strict: a field its family does not document is a 422
naming it, in the route's API family's shape. In-process, a fake backend."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from app_harness import (
    EMBEDDER, FAMILY, JSON, SERVED_BY, FakeBackend, error_message, fetch, make_app, one, post_json, serve,
)
from inferserve.common.config import ModelSpec, ServerConfig
from inferserve.frontend import openapi, tei
from inferserve.frontend.route import TEI, Route
from inferserve.http import ROUTES, create_app

# POST / takes /embed's body
SENTENCE_TRANSFORMERS = replace(EMBEDDER, facts=replace(EMBEDDER.facts, sentence_transformers=True))
EXTRA = Route("POST", "/embed_twice", "An extra route, in the table only", "test", "EmbedResponse",
              parse=tei.parse_embed, request="EmbedRequest", family=TEI)


def test_every_registered_route_is_the_tables_and_in_the_document() -> None:
    app, _ = make_app(FakeBackend(info=EMBEDDER))
    assert openapi.undocumented(app) == []  # nothing registered outside the table
    paths = openapi.build_document(app)["paths"]
    for route in ROUTES:
        assert route.method.lower() in paths[route.path], route.path
        if route.model_route:
            prefixed = "/models/{name}" + ("/" if route.path == "/" else route.path)
            assert route.method.lower() in paths[prefixed], prefixed
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)


def test_a_route_added_only_to_the_table_is_served_documented_and_shaped() -> None:
    config = ServerConfig(model=ModelSpec(model="fake"), api_key="k")
    app = create_app(config, backend=FakeBackend(info=EMBEDDER), routes=(*ROUTES, EXTRA))
    operation = openapi.build_document(app)["paths"]["/embed_twice"]["post"]
    assert operation["summary"] == EXTRA.summary
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/EmbedRequest")
    assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "post" in openapi.build_document(app)["paths"]["/models/{name}/embed_twice"]
    key = {"Authorization": "Bearer k"}

    async def scenario(client):  # type: ignore[no-untyped-def]
        return (await fetch(client, "POST", "/embed_twice", data=b'{"inputs": "a"}', headers={**JSON, **key}),
                await fetch(client, "POST", "/embed_twice", data=b'{"inputs": "a"}', headers=JSON),
                await fetch(client, "GET", "/embed_twice", headers=key),
                await fetch(client, "POST", "/embed_twice", data=b'{"inputs": "a", "x": 1}', headers={**JSON, **key}))

    served, unauthorised, wrong_method, unknown = serve(app, scenario)
    assert served.status == 200
    # Before its handler: the key guard's 401 and the router's 405, in TEI's shape as the table says.
    for reply, status in ((unauthorised, 401), (wrong_method, 405)):
        assert reply.status == status and set(reply.json()) == {"error", "error_type"}, reply.body
    assert unknown.status == 422 and "`x`" in unknown.json()["error"]


@pytest.mark.parametrize("alias,original,info,body", [
    ("/invocations", "/", SENTENCE_TRANSFORMERS, {"inputs": ["a", "b"], "normalize": False}),
    ("/invocations", "/", EMBEDDER, {"inputs": "a", "parameters": {"x": 1}}),
    ("/embeddings", "/v1/embeddings", EMBEDDER, {"input": ["a", "b"], "dimensions": 4}),
])
def test_teis_other_post_paths_are_their_routes(alias: str, original: str, info, body) -> None:
    """TEI's paths beside ours: SageMaker's POST /invocations is POST /, and
    /embeddings is OpenAI's /v1/embeddings; the same call reaches the model."""
    (reply, backend), (want, want_backend) = (post_json(path, body, FakeBackend(info=info))
                                              for path in (alias, original))
    assert reply.status == want.status == 200, reply.body
    assert [seen.call for seen in backend.seen] == [seen.call for seen in want_backend.seen] != []
    assert one("POST", "/models/fake" + alias, FakeBackend(info=info), data=orjson.dumps(body),
               headers=JSON)[0].status == 200


def test_sagemakers_ping_is_health() -> None:
    reply, _ = one("GET", "/ping", FakeBackend(info=EMBEDDER))
    assert reply.status == 200 and reply.json() == one("GET", "/health", FakeBackend(info=EMBEDDER))[0].json()


@pytest.mark.parametrize("path", sorted(SERVED_BY))
def test_an_unknown_field_on_every_json_route_is_a_422_naming_it(path: str) -> None:
    info, body = SERVED_BY[path]
    reply, backend = post_json(path, {**body, "not_a_field": 1}, FakeBackend(info=info))
    message = error_message(path, reply, 422, "unknown_field")
    assert "`not_a_field`" in message and backend.seen == []


@pytest.mark.parametrize("path,body", [
    ("/v1/embeddings", {"input": "a", "user": "u-1", "encoding_format": "float", "dimensions": 4, "model": "m"}),
    ("/embed", {"inputs": "a", "normalize": True, "truncate": True, "truncation_direction": "Left",
                "prompt_name": None, "dimensions": 4}),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 1, "return_documents": True, "model": "m"}),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": False, "return_text": True, "truncate": True,
                 "truncation_direction": "right"}),
])
def test_each_familys_documented_fields_are_taken(path: str, body: dict[str, object]) -> None:
    info = SERVED_BY[path][0]
    reply, backend = post_json(path, body, FakeBackend(info=info))
    assert reply.status == 200, reply.body
    assert len(backend.seen) == 1


def test_post_slash_on_an_embedding_model_refuses_unknown_parameters_and_stream() -> None:
    unknown, _ = post_json("/", {"inputs": "hello", "parameters": {"top_kk": 3}}, FakeBackend(info=SENTENCE_TRANSFORMERS))
    assert unknown.status == 422 and "`top_kk`" in unknown.json()["error"]
    stream, backend = post_json("/", {"inputs": "hello", "stream": True}, FakeBackend(info=SENTENCE_TRANSFORMERS))
    assert stream.status == 422 and "does not stream" in stream.json()["error"]
    taken, backend = post_json("/", {"inputs": "hello", "parameters": {"normalize": False}, "stream": False},
                               FakeBackend(info=SENTENCE_TRANSFORMERS))
    assert taken.status == 200 and len(backend.seen) == 1


@pytest.mark.parametrize("path", sorted(FAMILY))
def test_a_wrong_type_is_a_422_on_every_route(path: str) -> None:
    """One status per kind of body error across the families: a field of the wrong type."""
    info, body = SERVED_BY[path]
    field = next(iter(body))
    reply, _ = one("POST", path, FakeBackend(info=info), data=orjson.dumps({**body, field: 5}), headers=JSON)
    error_message(path, reply, 422, "invalid_request")


def test_coheres_fields_not_served_here_are_refused_by_name() -> None:
    info, body = SERVED_BY["/v2/rerank"]
    reply, backend = post_json("/v2/rerank", {**body, "max_tokens_per_doc": 100}, FakeBackend(info=info))
    assert reply.status == 422 and "`max_tokens_per_doc` (Cohere's) is not served here" in reply.json()["message"]
    assert backend.seen == []
