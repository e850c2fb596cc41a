"""``GET /openapi.json`` (OpenAPI 3.1) and ``GET /docs``, generated from the
route table (``routes.ROUTES``, which the app keeps) and ``schemas.py``:
the request schemas in the document are the ones the parsers validate
with, so the two cannot drift.

Each route of ``app.router`` is looked up in the table by its path (a
``/models/{name}`` prefix taken off: the same operation for a named model);
a route registered outside the table still appears, marked undocumented,
and ``undocumented(app)`` names it (tests/test_openapi.py fails on any).
The document describes the server as it runs: ``POST /``'s body on a
sentence-transformers model is ``/embed``'s (handlers.infer chooses the
same way), 401 is listed only with ``--api-key``, 404 where a model name
is read. ``/docs`` is Swagger UI from the swagger-ui-bundle package, its
files served by this server (no other host in the page).
docs/design.md#openapi.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import orjson
import swagger_ui_bundle
from aiohttp import web

from .. import __version__
from .models import MODELS_KEY
from .root import ROOT_BODIES, root_kind
from .route import OURS, ROUTES_KEY, TEI, Family, bare_path, by_path
from .schemas import SCHEMAS, ref
from .state import CONFIG_KEY

_MODEL_STATUSES = (400, 413, 415, 422, 500, 503, 504)
# Swagger UI's files /docs loads, served from the package's directory.
_SWAGGER_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
_STATUS_TEXT = {400: "Malformed body, or a model that does not serve the route", 401: "No or wrong API key",
                404: "No such model", 413: "Body or input count over the limits", 415: "Not JSON",
                422: "A body not in the route's shape, or an input or option the model refuses",
                424: "The model does not serve the route, or inference failed (TEI)",
                500: "Our bug", 503: "Loading, overloaded or draining: retry after Retry-After",
                504: "No answer before the deadline"}


def _routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, canonical path) of every route but the HEADs aiohttp adds to GETs."""
    found = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        found.append((route.method, route.resource.canonical))
    return found


def undocumented(app: web.Application) -> list[str]:
    """The routes registered outside the route table (a test keeps this empty)."""
    table = by_path(app[ROUTES_KEY])
    return [f"{method} {path}" for method, path in _routes(app) if bare_path(path)[0] not in table]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _root_body(kinds: list[str], prefixed: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST /'s request content and 200 content: the first model's, or (under
    /models/{name}) whichever the named model takes."""
    chosen = sorted(set(kinds) if prefixed else {kinds[0]})

    def one(schemas: list[dict[str, Any]]) -> dict[str, Any]:
        distinct = [s for i, s in enumerate(schemas) if s not in schemas[:i]]
        return distinct[0] if len(distinct) == 1 else {"anyOf": distinct}

    bodies = [ROOT_BODIES[kind] for kind in chosen]
    request = {"application/json": {"schema": one([ref(b.request) for b in bodies])},
               "text/plain": {"schema": one([ref(b.text) for b in bodies])}}
    answer = _json(one([b.answer for b in bodies]))
    if "pipeline" in chosen:
        answer["text/event-stream"] = {"schema": {"type": "string", "description": '"stream": true: one data '
                                                  "event per token, then one with the text"}}
    return request, answer


def _operation(path: str, method: str, context: dict[str, Any]) -> dict[str, Any]:
    bare, prefixed = bare_path(path)
    spec = context["table"].get(bare)
    if spec is None:
        return {"summary": "undocumented", "responses": {"default": {"description": "undocumented"}}}
    operation: dict[str, Any] = {"summary": spec.summary, "tags": [spec.tag],
                                 "operationId": (method.lower() + re.sub(r"\W+", "_", path)).rstrip("_")}
    ok_content = {spec.ok_type: {"schema": ref(spec.ok)}}
    statuses = set(spec.statuses)
    if method == "POST":
        statuses |= set(_MODEL_STATUSES)
        if spec.family is TEI:
            statuses.add(424)
        if spec.named_by is not None and context["several"]:
            statuses.add(404)  # the body's "model" names no model served
        operation["parameters"] = [{"name": "X-Request-Id", "in": "header", "required": False,
                                    "schema": {"type": "string"}, "description": "Echoed (printable ASCII, "
                                    "at most 128 characters); else one is made"}]
        operation["description"] = ("X-Request-Timeout: seconds, a positive number, to shorten --request-timeout. "
                                    "Answers carry X-Request-Id, X-Batch-Size, X-Queue-Time-Ms, X-Compute-Time-Ms.")
        if spec.request == "PipelineRequest":  # POST / and its SageMaker path: the body follows the model
            request, ok_content = _root_body(context["root_kinds"], prefixed)
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
    secured = context["api_key"] and not (spec.public and not prefixed)
    if secured:
        statuses.add(401)
        operation["security"] = [{"bearer": []}]
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok_content}}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"),
                                  "content": _json(_error_schema(spec.family, status))}
    operation["responses"] = responses
    return operation


def _error_schema(family: Family, status: int) -> dict[str, Any]:
    """The family's error; ours too where the router may answer with ours
    (a 404 or 500 on a path no route's family claims)."""
    if family is OURS:
        return ref(OURS.schema)
    if status in (404, 500):
        return {"anyOf": [ref(family.schema), ref(OURS.schema)]}
    return ref(family.schema)


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this app's routes, as it runs now."""
    config = app[CONFIG_KEY]
    models = app[MODELS_KEY]
    root_kinds = [root_kind(m.backend.info if m.backend is not None else None) for m in models.models]
    context = {"root_kinds": root_kinds, "names": list(models.names), "several": models.several,
               "api_key": bool(config.api_key), "table": by_path(app[ROUTES_KEY])}
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


async def docs(request: web.Request) -> web.Response:
    """Swagger UI (its files served from here: ``docs_asset``) over a table
    of the operations rendered here, so the page says something without
    scripts too."""
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
<link rel="stylesheet" href="docs/swagger-ui.css">
<style>body{{font-family:sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:left;vertical-align:top}}</style>
</head><body>
<div id="swagger-ui"></div>
<h1>inferserve {__version__}</h1>
<p>{html.escape(document["info"]["description"])} The OpenAPI document: <a href="openapi.json">/openapi.json</a>;
the interactive view above is Swagger UI {_swagger_version()}, served by this server.</p>
<table><tr><th>method</th><th>path</th><th>what</th><th>JSON body</th><th>statuses</th></tr>
{chr(10).join(rows)}
</table>
<script src="docs/swagger-ui-bundle.js"></script>
<script>if (window.SwaggerUIBundle) SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui"}});</script>
</body></html>
"""
    return web.Response(text=page, content_type="text/html")


def _swagger_version() -> str:
    """The bundled Swagger UI's version, from its directory's name (swagger-ui-4.15.5)."""
    return Path(swagger_ui_bundle.swagger_ui_path).name.rpartition("-")[2]


async def docs_asset(request: web.Request) -> web.StreamResponse:
    """``GET /docs/swagger-ui-bundle.js`` and ``/docs/swagger-ui.css``: the
    files /docs loads, from the swagger-ui-bundle package (pinned by its
    version: nothing from another host)."""
    name = request.path.rpartition("/")[2]
    content_type = _SWAGGER_FILES[name]
    path = Path(swagger_ui_bundle.swagger_ui_path) / name
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "public, max-age=86400"})
