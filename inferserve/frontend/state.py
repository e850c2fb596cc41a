"""What one running app holds, reached through typed ``web.AppKey``s."""

from __future__ import annotations

import importlib.metadata
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

from .. import __version__
from ..common.config import ServerConfig
from .metrics import ServerMetrics


def _request_ids() -> Iterator[str]:
    # 32 hex digits like a uuid4, without a getrandom() call and a UUID per
    # request: a random prefix per server start, then a counter.
    prefix = os.urandom(8).hex()
    return (f"{prefix}{n:016x}" for n in itertools.count(1))


def installed_versions() -> dict[str, str | None]:
    # From package metadata: importing torch here to ask would load it.
    versions: dict[str, str | None] = {"inferserve": __version__}
    for package in ("torch", "transformers", "aiohttp"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@dataclass
class ServerState:
    """Mutable state of one running app (never module-level)."""

    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
    versions: dict[str, str | None] = field(default_factory=dict)
    request_ids: Iterator[str] = field(default_factory=_request_ids)


CONFIG_KEY = web.AppKey("config", ServerConfig)
STATE_KEY = web.AppKey("state", ServerState)
METRICS_KEY = web.AppKey("metrics", ServerMetrics)
