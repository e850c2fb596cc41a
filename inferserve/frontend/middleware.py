"""Middlewares: metrics per route and status, JSON errors, the API key."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .models import MODEL_LABEL
from .responses import ErrorFactory
from .route import ROUTES_KEY, family_of
from .state import CONFIG_KEY, METRICS_KEY

log = logging.getLogger("inferserve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_factory_for(request: web.Request) -> ErrorFactory:
    """The error shape of the request's route's API family (the route table's)."""
    return family_of(request.app[ROUTES_KEY], request.path).error


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answered request by route, status and model, and time it."""
    metrics = request.app[METRICS_KEY]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.monotonic()
    metrics.in_flight.inc()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # client closed the connection (nginx's convention)
        raise
    finally:
        metrics.in_flight.dec()
        metrics.observe_request(route, status, time.monotonic() - started, request.get(MODEL_LABEL, ""))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; internals only with --debug."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = exc.reason.lower().replace(" ", "_")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_factory_for(request)(exc.status, kind, exc.reason, headers)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - our bug: log it, answer 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        message = f"{type(exc).__name__}: {exc}" if request.app[CONFIG_KEY].debug else "internal error"
        return error_factory_for(request)(500, "internal_error", message, None)


def api_key_guard(
    api_key: str, public_paths: frozenset[str],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """401 without ``Authorization: Bearer KEY``, except on ``public_paths``
    (the probes and the document: the table's public routes, by pattern)."""
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None or resource.canonical not in public_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant-time
                return error_factory_for(request)(
                    401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": "Bearer"}
                )
        return await handler(request)

    return guard
