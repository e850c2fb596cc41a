"""The models one server serves, and which one a request is for.

Each model has its own backend (its worker pool: workers and batchers of its
own) and its own view of the server's config (``model`` and
``served_model_name`` its own; every limit shared). A request reaches a
model by the ``/models/{name}/...`` prefix, or, on the routes whose body
names a model (OpenAI's ``/v1/embeddings``, Cohere's and Jina's
``/v1/rerank``, ``/v2/rerank``), by the body's ``model`` field; bare routes
and bodies naming none go to the first model. docs/design.md#several-models.

``ModelSet.admit`` is where a model request is admitted or refused, in one
pass: draining, the model's name, readiness and room (--max-queue per
model), the body (read and parsed there, between the checks), and whether
the model serves what the body asks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

import orjson
from aiohttp import web

from ..common.config import ServerConfig
from ..ipc import Call, RequestKind, WorkerReady
from .backend import InferenceBackend
from .errors import RequestError
from .responses import openai_error, unavailable
from .tei_sparse import check_model_kind

# The model a request was answered by, for the metrics' ``model`` label.
MODEL_LABEL = web.RequestKey("inferserve_model", str)


@dataclass
class ServedModel:
    name: str
    config: ServerConfig  # the server's config as this model sees it
    backend: InferenceBackend | None = None  # attached by create_app or the worker lifecycle


@dataclass(frozen=True)
class Admitted:
    """A request a model took: the model's name, its backend, the parsed body."""

    name: str
    backend: InferenceBackend
    call: Call


# Which model tasks serve each of these kinds (the worker's build_tasks).
_SERVING_TASKS = {
    RequestKind.RERANK: ("text-ranking",),
    RequestKind.PREDICT: ("text-classification", "text-ranking"),
}


class ModelSet:
    """Every model, by name; the first is the default."""

    def __init__(self, config: ServerConfig) -> None:
        self.models = tuple(
            ServedModel(named.name, replace(config, model=named.spec, served_model_name=named.name))
            for named in config.served_models()
        )
        self.by_name = {model.name: model for model in self.models}
        self.names = tuple(self.by_name)
        self.first = self.models[0]
        # Several models: bodies naming one choose it; with one, any name goes to it.
        self.several = len(self.models) > 1
        self.created = int(time.time())  # /v1/models' "created"
        # Resolved with a message when any model cannot load on its first start.
        self.fatal: asyncio.Future[str] | None = None

    def attach(self, backends: InferenceBackend | Mapping[str, InferenceBackend]) -> None:
        """One backend (a one-model server) or one per model name."""
        if not isinstance(backends, Mapping):
            if self.several:
                raise ValueError("several models need a backend each: pass {name: backend}")
            backends = {self.first.name: backends}
        for model in self.models:
            model.backend = backends[model.name]

    @property
    def ready(self) -> bool:
        return all(model.backend is not None and model.backend.ready for model in self.models)

    def loading(self) -> list[str]:
        return [m.name for m in self.models if m.backend is None or not m.backend.ready]

    def routed(self, request: web.Request) -> ServedModel | None:
        """The ``/models/{name}/...`` prefix's model (None: no such model), else the first."""
        name = request.match_info.get("name")
        return self.first if name is None else self.by_name.get(name)

    def named(self, name: str) -> ServedModel:
        """The model a body names (with one model, whatever it names); 404 if none."""
        model = self.by_name.get(name) if self.several else self.first
        if model is None:
            raise self.unknown(name)
        return model

    def unknown(self, name: str) -> RequestError:
        served = ", ".join(repr(n) for n in self.names)
        return RequestError(404, "model_not_found", f"the model {name!r} does not exist; this server serves {served}")

    async def admit(
        self, request: web.Request, draining: bool, read: Callable[[ServerConfig], Awaitable[Call]],
        named_by: Callable[[Call], str] | None = None,
    ) -> Admitted:
        """Admit a model request or raise its refusal; ``read`` reads and
        parses the body (with the model's config).

        The model is the route's (its ``/models/{name}`` prefix, else the
        first), known before the body is read, so it is checked first; with
        several models a body naming one (``named_by``) is parsed first,
        when some model could take it at all, then checked by the model it
        names. After the body, the model is checked again (others may have
        been admitted while it arrived), and whether it serves the call."""
        if draining:
            raise unavailable("the server is shutting down")
        model = self.routed(request)
        if model is None:
            raise self.unknown(request.match_info["name"])
        by_body = named_by is not None and self.several and "name" not in request.match_info
        if not by_body:
            request[MODEL_LABEL] = model.name
            self._check_room(model)
        elif not any(self._has_room(m) for m in self.models):
            self._check_room(self.first)  # none can: the first's reason
        call = await read(model.config)
        if named_by is not None and by_body:
            model = self.named(named_by(call))
            request[MODEL_LABEL] = model.name
        self._check_room(model)
        assert model.backend is not None
        _check_serves(call, model.backend.info)
        return Admitted(model.name, model.backend, call)

    def _has_room(self, model: ServedModel) -> bool:
        backend = model.backend
        return backend is not None and backend.ready and backend.in_flight < model.config.max_queue

    def _check_room(self, model: ServedModel) -> None:
        """503 unless the model is ready and has room (--max-queue per model)."""
        backend = model.backend
        assert backend is not None
        if not backend.ready:
            raise unavailable(f"the model {model.name} is not ready" if self.several else "the model is not ready")
        if backend.in_flight >= model.config.max_queue:
            raise unavailable("the server is overloaded; retry later")


def _check_serves(call: Call, info: WorkerReady | None) -> None:
    """400 ``not_supported`` (TEI's routes: 424) when the loaded model cannot
    answer this kind of call (before it is known: the worker says so)."""
    if info is None:
        return
    check_model_kind(call, info)  # 424 naming the route a sparse (or dense) model serves
    if call.kind in (RequestKind.EMBED, RequestKind.EMBED_ALL) and info.facts.embedding_dimension is None:
        raise RequestError(400, "not_supported", f"this model ({info.task}) does not produce sentence embeddings")
    tasks = _SERVING_TASKS.get(call.kind)
    if tasks is None or info.task in tasks:
        return
    if call.kind is RequestKind.RERANK:
        need = "a cross-encoder (a sequence-classification model with one label, or --task text-ranking)"
        raise RequestError(400, "not_supported", f"this model ({info.task}) does not rerank; that needs {need}")
    raise RequestError(400, "not_supported",
                       f"this model ({info.task}) is not a sequence classifier; /predict needs text-classification")


MODELS_KEY = web.AppKey("models", ModelSet)


def _model_object(models: ModelSet, name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": models.created, "owned_by": "inferserve"}


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: OpenAI's model list."""
    models = request.app[MODELS_KEY]
    document = {"object": "list", "data": [_model_object(models, name) for name in models.names]}
    return web.Response(body=orjson.dumps(document), content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``: OpenAI's model object, or 404 in OpenAI's shape."""
    models = request.app[MODELS_KEY]
    name = request.match_info["model"]
    if name not in models.by_name:
        failure = models.unknown(name)
        return openai_error(failure.status, failure.kind, failure.message)
    return web.Response(body=orjson.dumps(_model_object(models, name)), content_type="application/json")
