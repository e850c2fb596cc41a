"""The front-end process's face: the aiohttp app, its routes and lifecycle.

Everything it uses lives in ``inferserve.frontend`` (this process's wing) or
``inferserve.common`` (the corridor); it starts workers by module name and
never imports torch, transformers or the worker's code. Model outputs
arrive from the worker already JSON-encoded and are written as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from functools import partial

from aiohttp import web

from .common.config import ServerConfig
from .frontend import handlers, openapi, tei, tei_sparse
from .frontend.handlers import serving
from .frontend.backend import InferenceBackend
from .frontend.metrics import ServerMetrics
from .frontend.middleware import api_key_guard, json_errors, observe
from .frontend.models import MODELS_KEY, ModelSet, list_models, retrieve_model
from .frontend.payload import parse_openai_embeddings
from .frontend.rerank_payload import parse_cohere_rerank_v1, parse_cohere_rerank_v2, parse_predict, parse_rerank
from .frontend.responses import cohere_error, openai_error, tei_error
from .frontend.state import BACKEND_KEY, CONFIG_KEY, METRICS_KEY, STATE_KEY, ServerState, installed_versions
from .frontend.worker_pool import WorkerPool, worker_specs

__all__ = ["BACKEND_KEY", "CONFIG_KEY", "METRICS_KEY", "MODELS_KEY", "STATE_KEY", "create_app"]

# Every model's routes, bare (the first model) and under /models/{name}
# (docs/design.md#several-models); a name may hold "/" (hub ids do).
_MODEL_ROUTES = (
    # POST routes: the parser of the body and the error shape of the route's API family.
    ("POST", "/", handlers.infer),  # the task's pipeline (a sentence-transformers model: /embed's body)
    ("POST", "/embed", serving(tei.parse_embed, tei_error)),
    ("POST", "/embed_all", serving(tei.parse_embed_all, tei_error)),
    ("POST", "/embed_sparse", serving(tei_sparse.parse_embed_sparse, tei_error)),
    ("POST", "/similarity", serving(tei_sparse.parse_similarity, tei_error)),
    ("POST", "/tokenize", serving(tei.parse_tokenize, tei_error)),
    ("POST", "/decode", serving(tei.parse_decode, tei_error)),
    ("POST", "/v1/embeddings", serving(parse_openai_embeddings, openai_error, handlers.embed_model_name)),
    ("POST", "/rerank", serving(parse_rerank, tei_error)),
    ("POST", "/v1/rerank", serving(parse_cohere_rerank_v1, cohere_error, handlers.rerank_model_name)),
    ("POST", "/v2/rerank", serving(parse_cohere_rerank_v2, cohere_error, handlers.rerank_model_name)),
    ("POST", "/predict", serving(parse_predict, tei_error)),
    ("GET", "/ready", handlers.ready),
    ("GET", "/info", handlers.info),
)


def create_app(
    config: ServerConfig, backend: InferenceBackend | Mapping[str, InferenceBackend] | None = None,
) -> web.Application:
    """The aiohttp app; without ``backend`` it owns real worker processes (a
    pool per model). ``backend``: one (a one-model server) or one per model name."""
    middlewares = [observe, json_errors]
    if config.api_key:
        middlewares.append(api_key_guard(config.api_key))
    # +1 so that a body of exactly the limit is accepted and ours is the 413.
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes + 1)
    app[CONFIG_KEY] = config
    app[STATE_KEY] = ServerState(versions=installed_versions())
    app[METRICS_KEY] = ServerMetrics()
    app[MODELS_KEY] = ModelSet(config)
    if backend is not None:
        _attach_backends(app, backend)
    else:
        app.cleanup_ctx.append(_worker_lifecycle)
    # Longest suffix first: /models/x/v1/rerank is model x's /v1/rerank, not model "x/v1"'s /rerank.
    by_suffix = sorted(_MODEL_ROUTES, key=lambda route: -len(route[1]))
    for prefix, routes in (("", _MODEL_ROUTES), ("/models/{name:.+}", by_suffix)):
        for method, path, handler in routes:
            add = app.router.add_get if method == "GET" else app.router.add_post  # GET: HEAD too
            add(prefix + path, handler)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/metrics", handlers.metrics)
    openapi.add_routes(app)  # GET /openapi.json and /docs, from the routes above
    return app


def _attach_backends(app: web.Application, backends: InferenceBackend | Mapping[str, InferenceBackend]) -> None:
    models = app[MODELS_KEY]
    models.attach(backends)
    app[BACKEND_KEY] = models.first.backend  # the first model's, as before there were several
    for model in models.models:
        backend = model.backend
        assert backend is not None
        app[METRICS_KEY].track_model(
            model.name, partial(lambda b: b.in_flight, backend), partial(lambda b: float(b.ready), backend)
        )


async def _worker_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Spawn every model's workers (the models in parallel) with the app; stop
    them (after the drain) with the app."""
    config = app[CONFIG_KEY]
    metrics = app[METRICS_KEY]
    models = app[MODELS_KEY]
    processes = config.workers * len(models.models)  # sharing the CPU cores
    pools = {
        model.name: WorkerPool(
            worker_specs(model.config.model, config.workers, config.devices, processes),
            config.batch,
            log_level=config.log_level,
            log_format=config.log_format,
            on_batch=partial(metrics.observe_batch, model=model.name),
            on_restart=partial(metrics.observe_restart, model.name),
            on_answer=partial(metrics.observe_answer, model=model.name),
            on_retry=partial(metrics.observe_retry, model.name),
            model_name=model.name if models.several else "",
        )
        for model in models.models
    }
    _attach_backends(app, pools)
    models.fatal = asyncio.get_running_loop().create_future()
    started = await asyncio.gather(*(pool.start() for pool in pools.values()), return_exceptions=True)
    failed = next((r for r in started if isinstance(r, BaseException)), None)
    if failed is not None:
        await asyncio.gather(*(pool.stop(timeout=1.0) for pool in pools.values()))
        raise failed
    for name, pool in pools.items():
        assert pool.fatal is not None
        pool.fatal.add_done_callback(partial(_model_fatal, models, name, several=models.several))
    yield
    await asyncio.gather(*(pool.stop(timeout=config.graceful_timeout_s) for pool in pools.values()))


def _model_fatal(models: ModelSet, name: str, future: asyncio.Future[str], several: bool) -> None:
    """A model that cannot load on its first start makes the server exit."""
    if models.fatal is not None and not models.fatal.done() and not future.cancelled():
        models.fatal.set_result(f"model {name}: {future.result()}" if several else future.result())
