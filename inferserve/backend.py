"""What the HTTP layer needs from whatever runs the model, and how it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from .ipc import EmbedOptions, InferResult, RequestKind, WorkerReady


class WorkerUnavailable(Exception):
    """No worker can take or finish this request right now (HTTP 503)."""


class WorkerDied(WorkerUnavailable):
    """The worker process died with this request in flight (safe to retry:
    inference is idempotent)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its answer came (HTTP 504)."""


class InferenceBackend(Protocol):
    """What the HTTP layer needs from whatever runs the model."""

    @property
    def ready(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def info(self) -> WorkerReady | None: ...

    async def infer(
        self, inputs: tuple[Any, ...], params: dict[str, Any], single: bool, deadline: float,
        kind: RequestKind = RequestKind.PIPELINE, embed: EmbedOptions | None = None,
    ) -> InferResult: ...

    def stream(self, prompt: str, params: dict[str, Any], deadline: float) -> AsyncIterator[Any]: ...
