"""``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs``, generated from the
app's routes and ``schemas.py``: the request schemas in the document are
the ones the parsers validate with, so the two cannot drift.

Each route of ``app.router`` is looked up in ``OPERATIONS`` by its path (a
``/models/{name}`` prefix taken off: the same operation for a named model);
a route missing there still appears, marked undocumented, and
``undocumented(app)`` names it (tests/test_openapi.py fails on any).
The document describes the server as it runs: ``POST /``'s body on a
sentence-transformers model is ``/embed``'s (handlers.infer chooses the
same way), 401 is listed only with ``--api-key``, 404 where a model name
is read. docs/design.md#openapi.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from .middleware import PUBLIC_PATHS
from .models import MODELS_KEY
from .schemas import SCHEMAS, ref, warm
from .state import CONFIG_KEY

OURS, TEI, OPENAI, COHERE = "Error", "ErrorResponse", "OpenAIError", "CohereError"  # each family's error schema


@dataclass(frozen=True)
class Operation:
    """One route: what it takes, what it answers, and its API family's errors."""

    summary: str
    tag: str
    ok: str  # the 200 body's schema
    request: str | None = None  # the JSON body's schema (POST)
    errors: str = OURS
    ok_type: str = "application/json"
    statuses: tuple[int, ...] = ()  # its error statuses; POST model routes get _MODEL_STATUSES


_MODEL_STATUSES = (400, 413, 415, 422, 500, 503, 504)
_INFERENCE = "inference"

OPERATIONS: dict[str, Operation] = {
    "/": Operation("The task's pipeline on a raw text body or the inference API's JSON (a sentence-transformers "
                   "model: /embed's answer)", _INFERENCE, "PipelineOutput", "PipelineRequest"),
    "/embed": Operation("Sentence embeddings (TEI)", "text-embeddings-inference", "EmbedResponse", "EmbedRequest", TEI),
    "/embed_all": Operation("Every token's vector (TEI)", "text-embeddings-inference", "EmbedAllResponse",
                            "EmbedAllRequest", TEI),
    "/embed_sparse": Operation("Sparse embeddings of a SPLADE model: non-zero weights (TEI)",
                               "text-embeddings-inference", "EmbedSparseResponse", "EmbedSparseRequest", TEI),
    "/similarity": Operation("Similarity of a source sentence to each sentence (TEI)", "text-embeddings-inference",
                             "SimilarityResponse", "SimilarityRequest", TEI),
    "/tokenize": Operation("Tokens, offsets in UTF-8 bytes (TEI)", "text-embeddings-inference", "TokenizeResponse",
                           "TokenizeRequest", TEI),
    "/decode": Operation("Token ids to text (TEI)", "text-embeddings-inference", "DecodeResponse", "DecodeRequest",
                         TEI),
    "/rerank": Operation("Rank texts against a query with a cross-encoder (TEI)", "text-embeddings-inference",
                         "RerankResponse", "RerankRequest", TEI),
    "/predict": Operation("Classify a text or a text pair (TEI)", "text-embeddings-inference", "PredictResponse",
                          "PredictRequest", TEI),
    "/v1/embeddings": Operation("Embeddings (OpenAI)", "openai", "OpenAICompatResponse", "OpenAICompatRequest",
                                OPENAI),
    "/v1/rerank": Operation("Rerank (Cohere v1, Jina)", "rerank", "CohereRerankResponse", "CohereRerankRequest",
                            COHERE),
    "/v2/rerank": Operation("Rerank (Cohere v2)", "rerank", "CohereRerankResponse", "CohereRerankRequest", COHERE),
    "/health": Operation("Liveness: 200 while the process lives", "server", "Health"),
    "/ready": Operation("Readiness: 200 once the model (every model) is loaded and warmed up", "server", "Ready",
                        statuses=(503,)),
    "/info": Operation("The model, its task, device and limits, versions; TEI's Info fields", "server", "Info"),
    "/metrics": Operation("Prometheus metrics", "server", "Text", ok_type="text/plain"),
    "/v1/models": Operation("The models served (OpenAI)", "openai", "ModelList", errors=OPENAI),
    "/v1/models/{model}": Operation("One model (OpenAI)", "openai", "Model", errors=OPENAI, statuses=(404,)),
    "/openapi.json": Operation("This document", "server", "OpenAPIDocument"),
    "/docs": Operation("This document as a web page", "server", "Text", ok_type="text/html"),
}

_PREFIX = re.compile(r"^/models/\{name\}(?=/|$)")
_STATUS_TEXT = {400: "Malformed body, or a model that does not serve the route", 401: "No or wrong API key",
                404: "No such model", 413: "Body or input count over the limits", 415: "Not JSON",
                422: "A body not in the route's shape, or an input or option the model refuses",
                424: "The model does not serve the route, or inference failed (TEI)",
                500: "Our bug", 503: "Loading, overloaded or draining: retry after Retry-After",
                504: "No answer before the deadline"}


def _suffix(path: str) -> tuple[str, bool]:
    """(the path without a /models/{name} prefix, whether it had one)."""
    bare = _PREFIX.sub("", path)
    return (bare or "/"), bare != path


def _routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, canonical path) of every route but the HEADs aiohttp adds to GETs."""
    found = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        found.append((route.method, route.resource.canonical))
    return found


def undocumented(app: web.Application) -> list[str]:
    """The routes with no entry in OPERATIONS (a test keeps this empty)."""
    return [f"{method} {path}" for method, path in _routes(app) if _suffix(path)[0] not in OPERATIONS]


def _sentence_transformers(app: web.Application) -> list[bool]:
    """For each model: whether POST / takes /embed's body (as handlers.infer decides)."""
    models = app[MODELS_KEY].models
    return [bool(m.backend is not None and m.backend.info is not None and m.backend.info.sentence_transformers)
            for m in models]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _root_body(embeds: list[bool], prefixed: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST /'s request content and 200 content: the first model's, or (under
    /models/{name}) whichever the named model takes."""
    chosen = set(embeds) if prefixed else {embeds[0]}
    json_schemas = [ref("RootEmbedRequest" if e else "PipelineRequest") for e in sorted(chosen)]
    text_schemas = [ref("EmbedTextBody" if e else "TextBody") for e in sorted(chosen)]
    one = (lambda s: s[0]) if len(chosen) == 1 else (lambda s: {"anyOf": s})
    request = {"application/json": {"schema": one(json_schemas)}, "text/plain": {"schema": one(text_schemas)}}
    answer = _json(ref("EmbedResponse") if chosen == {True} else ref("PipelineOutput"))
    if False in chosen:
        answer["text/event-stream"] = {"schema": {"type": "string", "description": '"stream": true: one data '
                                                  "event per token, then one with the text"}}
    return request, answer


def _operation(path: str, method: str, context: dict[str, Any]) -> dict[str, Any]:
    bare, prefixed = _suffix(path)
    spec = OPERATIONS.get(bare)
    if spec is None:
        return {"summary": "undocumented", "responses": {"default": {"description": "undocumented"}}}
    operation: dict[str, Any] = {"summary": spec.summary, "tags": [spec.tag],
                                 "operationId": (method.lower() + re.sub(r"\W+", "_", path)).rstrip("_")}
    ok_content = {spec.ok_type: {"schema": ref(spec.ok)}}
    statuses = set(spec.statuses)
    if method == "POST":
        statuses |= set(_MODEL_STATUSES)
        if spec.errors == TEI:
            statuses.add(424)
        if spec.errors in (OPENAI, COHERE) and context["several"]:
            statuses.add(404)  # the body's "model" names no model served
        operation["parameters"] = [{"name": "X-Request-Id", "in": "header", "required": False,
                                    "schema": {"type": "string"}, "description": "Echoed (printable ASCII, "
                                    "at most 128 characters); else one is made"}]
        operation["description"] = ("X-Request-Timeout: seconds, a positive number, to shorten --request-timeout. "
                                    "Answers carry X-Request-Id, X-Batch-Size, X-Queue-Time-Ms, X-Compute-Time-Ms.")
        if bare == "/":
            request, ok_content = _root_body(context["embeds"], prefixed)
            operation["description"] += " A raw body may also be form-encoded, octet-stream or untyped."
        else:
            request = _json(ref(spec.request or "Text"))
        operation["requestBody"] = {"required": True, "content": request}
    if prefixed:
        statuses.add(404)
    for name in re.findall(r"\{(\w+)\}", path):
        operation.setdefault("parameters", []).insert(0, {
            "name": name, "in": "path", "required": True, "description": "A model's name",
            "schema": {"type": "string", "enum": context["names"]}})
    secured = context["api_key"] and path not in PUBLIC_PATHS
    if secured:
        statuses.add(401)
        operation["security"] = [{"bearer": []}]
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok_content}}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"),
                                  "content": _json(_error_schema(spec.errors, status))}
    operation["responses"] = responses
    return operation


def _error_schema(family: str, status: int) -> dict[str, Any]:
    """The family's error; ours too where aiohttp or a middleware may answer
    (401 from the key guard, 404 from the router, 500 for our bugs)."""
    if family == OURS or status == 401:
        return ref(OURS)
    if status in (404, 500):
        return {"anyOf": [ref(family), ref(OURS)]}
    return ref(family)


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this app's routes, as it runs now."""
    config = app[CONFIG_KEY]
    models = app[MODELS_KEY]
    context = {"embeds": _sentence_transformers(app), "names": list(models.names), "several": models.several,
               "api_key": bool(config.api_key)}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in _routes(app):
        paths.setdefault(path, {})[method.lower()] = _operation(path, method, context)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "inferserve", "version": __version__,
                 "description": f"Serving {', '.join(models.names)}. Errors take each API family's shape: ours "
                                "{error, type}, TEI's {error, error_type}, OpenAI's {error: {message, type, param, "
                                "code}}, Cohere's {message}.",
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": SCHEMAS},
    }
    if config.api_key:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(build_document(request.app)), content_type="application/json")


_SWAGGER_UI = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"


async def docs(request: web.Request) -> web.Response:
    """Swagger UI from a CDN, over a list of the operations rendered here
    (so the page says something useful offline too)."""
    document = build_document(request.app)
    rows = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            request_schema = body.get("$ref", "").rpartition("/")[2] or ("..." if body else "")
            statuses = ", ".join(operation["responses"])
            rows.append(f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(operation['summary'])}</td><td>{html.escape(request_schema)}</td>"
                        f"<td>{statuses}</td></tr>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>inferserve {__version__}: API</title>
<link rel="stylesheet" href="{_SWAGGER_UI}/swagger-ui.css">
<style>body{{font-family:sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:left;vertical-align:top}}</style>
</head><body>
<div id="swagger-ui"></div>
<h1>inferserve {__version__}</h1>
<p>{html.escape(document["info"]["description"])} The OpenAPI document: <a href="openapi.json">/openapi.json</a>;
the interactive view above loads Swagger UI from a CDN.</p>
<table><tr><th>method</th><th>path</th><th>what</th><th>JSON body</th><th>statuses</th></tr>
{chr(10).join(rows)}
</table>
<script src="{_SWAGGER_UI}/swagger-ui-bundle.js" crossorigin></script>
<script>if (window.SwaggerUIBundle) SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui"}});</script>
</body></html>
"""
    return web.Response(text=page, content_type="text/html")


def add_routes(app: web.Application) -> None:
    warm()  # the parsers' schemas compiled now (once a process), not on their first requests
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
