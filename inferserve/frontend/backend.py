"""What the HTTP layer needs from whatever runs the model.

The worker pool implements it for real; tests drive the app with an
in-process fake. Failures surface as ``frontend.errors`` types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..ipc import Call, InferResult, StreamChunk, WorkerReady


class InferenceBackend(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def info(self) -> WorkerReady | None: ...

    async def infer(self, call: Call, deadline: float) -> InferResult: ...

    def stream(self, call: Call, deadline: float) -> AsyncIterator[StreamChunk | InferResult]: ...
