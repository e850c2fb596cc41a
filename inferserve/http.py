"""The front-end process's face: the aiohttp app, its routes and lifecycle.

Everything it uses lives in ``inferserve.frontend`` (this process's wing) or
``inferserve.common`` (the corridor); it starts workers by module name and
never imports torch, transformers or the worker's code. Model outputs
arrive from the worker already JSON-encoded and are written as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .common.config import ServerConfig
from .frontend import handlers
from .frontend.backend import InferenceBackend
from .frontend.metrics import ServerMetrics
from .frontend.middleware import api_key_guard, json_errors, observe
from .frontend.state import BACKEND_KEY, CONFIG_KEY, METRICS_KEY, STATE_KEY, ServerState, installed_versions
from .frontend.worker_pool import WorkerPool, worker_specs

__all__ = ["BACKEND_KEY", "CONFIG_KEY", "METRICS_KEY", "STATE_KEY", "create_app"]


def create_app(config: ServerConfig, backend: InferenceBackend | None = None) -> web.Application:
    """The aiohttp app; without ``backend`` it owns real worker processes."""
    middlewares = [observe, json_errors]
    if config.api_key:
        middlewares.append(api_key_guard(config.api_key))
    # +1 so that a body of exactly the limit is accepted and ours is the 413.
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes + 1)
    app[CONFIG_KEY] = config
    app[STATE_KEY] = ServerState(versions=installed_versions())
    app[METRICS_KEY] = ServerMetrics()
    if backend is not None:
        _attach_backend(app, backend)
    else:
        app.cleanup_ctx.append(_worker_lifecycle)
    app.router.add_post("/", handlers.infer)
    app.router.add_post("/embed", handlers.embed)
    app.router.add_post("/v1/embeddings", handlers.openai_embeddings)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/ready", handlers.ready)
    app.router.add_get("/info", handlers.info)
    app.router.add_get("/metrics", handlers.metrics)
    return app


def _attach_backend(app: web.Application, backend: InferenceBackend) -> None:
    app[BACKEND_KEY] = backend
    app[METRICS_KEY].track_backend(lambda: backend.in_flight, lambda: float(backend.ready))


async def _worker_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Spawn the workers with the app; stop them (after the drain) with the app."""
    config = app[CONFIG_KEY]
    metrics = app[METRICS_KEY]
    pool = WorkerPool(
        worker_specs(config.model, config.workers, config.devices),
        config.batch,
        log_level=config.log_level,
        log_format=config.log_format,
        on_batch=metrics.observe_batch,
        on_restart=metrics.worker_restarts.inc,
        on_answer=metrics.observe_answer,
        on_retry=metrics.retries.inc,
    )
    _attach_backend(app, pool)
    await pool.start()
    yield
    await pool.stop(timeout=config.graceful_timeout_s)
