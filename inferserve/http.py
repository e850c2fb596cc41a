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
from .common.preloaded_starts import ONNX_PRELOAD, WORKER_PRELOAD, PreloadedStarts
from .frontend.backend import InferenceBackend
from .frontend.handlers import serving
from .frontend.metrics import ServerMetrics
from .frontend.middleware import api_key_guard, json_errors, observe
from .frontend.models import MODELS_KEY, ModelSet
from .frontend.route import MODEL_PREFIX, ROUTES_KEY, Route
from .frontend.routes import ROUTES
from .frontend.schemas import warm
from .frontend.state import CONFIG_KEY, METRICS_KEY, STATE_KEY, ServerState, installed_versions
from .frontend.worker_pool import WorkerPool, worker_specs

__all__ = ["CONFIG_KEY", "METRICS_KEY", "MODELS_KEY", "ROUTES", "STATE_KEY", "create_app"]


def create_app(
    config: ServerConfig, backend: InferenceBackend | Mapping[str, InferenceBackend] | None = None,
    routes: tuple[Route, ...] = ROUTES,
) -> web.Application:
    """The aiohttp app; without ``backend`` it owns real worker processes (a
    pool per model). ``backend``: one (a one-model server) or one per model
    name. ``routes``: the route table (routes.ROUTES)."""
    middlewares = [observe, json_errors]
    if config.api_key:
        middlewares.append(api_key_guard(config.api_key, frozenset(r.path for r in routes if r.public)))
    # +1 so that a body of exactly the limit is accepted and ours is the 413.
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes + 1)
    app[CONFIG_KEY] = config
    app[STATE_KEY] = ServerState(versions=installed_versions())
    app[METRICS_KEY] = ServerMetrics()
    app[MODELS_KEY] = ModelSet(config)
    app[ROUTES_KEY] = routes
    if backend is not None:
        _attach_backends(app, backend)
    else:
        app.cleanup_ctx.append(_worker_lifecycle)
    warm()  # the parsers' schemas compiled now (once a process), not on their first requests
    _register(app, routes)
    return app


def _register(app: web.Application, routes: tuple[Route, ...]) -> None:
    """Every route of the table; a model's routes bare and under /models/{name}
    (docs/design.md#several-models; a name may hold "/", as hub ids do)."""
    # Longest path first under the prefix: /models/x/v1/rerank is model x's
    # /v1/rerank, not model "x/v1"'s /rerank.
    prefixed = sorted((r for r in routes if r.model_route), key=lambda r: -len(r.path))
    by_prefix = [("", route) for route in routes] + [(MODEL_PREFIX.replace("}", ":.+}"), r) for r in prefixed]
    for prefix, route in by_prefix:
        handler = route.handler or serving(route)
        path = prefix + (route.pattern or route.path)
        add = app.router.add_get if route.method == "GET" else app.router.add_post  # GET: HEAD too
        add(path, handler)


def _attach_backends(app: web.Application, backends: InferenceBackend | Mapping[str, InferenceBackend]) -> None:
    models = app[MODELS_KEY]
    models.attach(backends)
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
    processes = config.workers * len(models.models)  # sharing the CPU cores (idle spares aside)
    onnx = any(model.config.model.engine != "torch" for model in models.models)
    helper = PreloadedStarts(WORKER_PRELOAD + (ONNX_PRELOAD if onnx else ()))
    await asyncio.get_running_loop().run_in_executor(None, helper.start)
    pools = {
        model.name: WorkerPool(
            worker_specs(model.config.model, config.workers + config.spare_workers, config.devices, processes),
            config.batch,
            log_level=config.log_level,
            log_format=config.log_format,
            on_batch=partial(metrics.observe_batch, model=model.name),
            on_restart=partial(metrics.observe_restart, model.name),
            on_answer=partial(metrics.observe_answer, model=model.name),
            on_retry=partial(metrics.observe_retry, model.name),
            model_name=model.name if models.several else "",
            context=helper.context,
            spares=config.spare_workers,
        )
        for model in models.models
    }
    _attach_backends(app, pools)
    models.fatal = asyncio.get_running_loop().create_future()
    started = await asyncio.gather(*(pool.start() for pool in pools.values()), return_exceptions=True)
    failed = next((r for r in started if isinstance(r, BaseException)), None)
    if failed is not None:
        await asyncio.gather(*(pool.stop(timeout=1.0) for pool in pools.values()))
        await asyncio.get_running_loop().run_in_executor(None, helper.stop)
        raise failed
    for name, pool in pools.items():
        assert pool.fatal is not None
        pool.fatal.add_done_callback(partial(_model_fatal, models, name, several=models.several))
    yield
    await asyncio.gather(*(pool.stop(timeout=config.graceful_timeout_s) for pool in pools.values()))
    await asyncio.get_running_loop().run_in_executor(None, helper.stop)


def _model_fatal(models: ModelSet, name: str, future: asyncio.Future[str], several: bool) -> None:
    """A model that cannot load on its first start makes the server exit."""
    if models.fatal is not None and not models.fatal.done() and not future.cancelled():
        models.fatal.set_result(f"model {name}: {future.result()}" if several else future.result())
