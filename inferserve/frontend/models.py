"""The models one server serves, and which one a request is for.

Each model has its own backend (its worker pool: workers and batchers of its
own) and its own view of the server's config (``model`` and
``served_model_name`` its own; every limit shared). A request reaches a
model by the ``/models/{name}/...`` prefix, or, on the routes whose body
names a model (OpenAI's ``/v1/embeddings``, Cohere's and Jina's
``/v1/rerank``, ``/v2/rerank``), by the body's ``model`` field; bare routes
and bodies naming none go to the first model. docs/design.md#several-models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson
from aiohttp import web

from ..common.config import ServerConfig
from .backend import InferenceBackend
from .responses import Failure, openai_error

# The model a request was answered by, for the metrics' ``model`` label.
MODEL_LABEL = web.RequestKey("inferserve_model", str)


@dataclass
class ServedModel:
    name: str
    config: ServerConfig  # the server's config as this model sees it
    backend: InferenceBackend | None = None  # attached by create_app or the worker lifecycle


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

    def unknown(self, name: str) -> Failure:
        served = ", ".join(repr(n) for n in self.names)
        return Failure(404, "model_not_found", f"the model {name!r} does not exist; this server serves {served}")

    def can_admit_any(self, max_queue: int) -> bool:
        """Whether some model could take a request now (before a body naming one is parsed)."""
        return any(m.backend is not None and m.backend.ready and m.backend.in_flight < max_queue
                   for m in self.models)


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
