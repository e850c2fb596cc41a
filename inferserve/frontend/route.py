"""What a route is: one ``Route`` record holds every fact of a route (its
method and path, parser and request schema, answer schema, API family,
summary), so that registering it (``http.py``), its error shape before a
handler runs (``middleware``) and its entry in ``/openapi.json``
(``openapi.py``) all derive from one place: ``routes.ROUTES``, the table.
docs/design.md#routes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..ipc import Call
from .fields import Parser
from .responses import ErrorFactory, cohere_error, error_response, openai_error, tei_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Family:
    """An API family's errors: the JSON shape and its schema's name in /openapi.json."""

    schema: str
    error: ErrorFactory


OURS = Family("Error", error_response)
TEI = Family("ErrorResponse", tei_error)
OPENAI = Family("OpenAIError", openai_error)
COHERE = Family("CohereError", cohere_error)


@dataclass(frozen=True)
class Route:
    """One route. A model route (``parse`` given, or ``per_model``) is served
    bare, for the first model, and under ``/models/{name}``."""

    method: str  # GET (HEAD too) or POST
    path: str  # aiohttp's pattern, as /openapi.json writes it ({model}, not {model:.+})
    summary: str
    tag: str
    ok: str  # the 200 body's schema
    handler: Handler | None = None  # None: handlers.serving(this route), the model round trip
    parse: Parser | None = None  # the body's parser, handed ``request`` as its schema
    request: str | None = None  # the JSON body's schema
    family: Family = OURS
    ok_type: str = "application/json"
    statuses: tuple[int, ...] = ()  # its error statuses; POST model routes get the model's too
    per_model: bool = False  # also under /models/{name} (a POST with a parser always is)
    named_by: Callable[[Call], str] | None = None  # reads the model a body names, where it can
    public: bool = False  # open without --api-key (probes, the document)
    pattern: str = ""  # the router's pattern where the path's {param} needs one ({model:.+})

    @property
    def model_route(self) -> bool:
        return self.per_model or self.parse is not None


MODEL_PREFIX = "/models/{name}"
ROUTES_KEY = web.AppKey("routes", tuple)  # the app's table: create_app's ``routes``
_PREFIX = re.compile(r"^/models/\{name\}(?=/|$)")


def bare_path(path: str) -> tuple[str, bool]:
    """(the documented path without a /models/{name} prefix, whether it had one)."""
    bare = _PREFIX.sub("", path)
    return (bare or "/"), bare != path


def by_path(routes: tuple[Route, ...]) -> dict[str, Route]:
    return {route.path: route for route in routes}


def family_of(routes: tuple[Route, ...], path: str) -> Family:
    """The API family of a request's path, for errors raised before its
    handler (401, 404, 405) or by our bugs (500): the route whose path is
    the longest suffix of it (a /models/{name} prefix keeps its route's
    family; a name may hold "/"), else ours."""
    best: Route | None = None
    for route in routes:
        bare = route.path.split("{", 1)[0]
        if route.family is OURS or bare == "/":
            continue
        matches = path.startswith(bare) if "{" in route.path else path.endswith(route.path)
        if matches and (best is None or len(route.path) > len(best.path)):
            best = route
    return best.family if best is not None else OURS
