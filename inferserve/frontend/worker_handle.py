"""One worker as the pool sees it: its process and its requests, joined.

``WorkerProcess`` supervises the process (start, restart, backoff, stop);
``WorkerRequests`` matches requests to answers. This class wires the two
(answers read by the one go to the other; a death fails the requests in
flight) and says whether the worker takes traffic: a spare (``serving``
False) is loaded and warm but gets no request until the pool promotes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from ..common.config import BatchPolicy, ModelSpec
from ..ipc import BatchReport, Call, InferResult, StreamChunk, WorkerReady
from .errors import WorkerDied, WorkerUnavailable
from .worker_process import WorkerProcess
from .worker_requests import WorkerRequests


class WorkerHandle:
    """One worker process and the requests in flight on it."""

    def __init__(
        self,
        index: int,
        spec: ModelSpec,
        policy: BatchPolicy,
        log_level: str = "info",
        log_format: str = "text",
        on_batch: Callable[[BatchReport], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        model_name: str = "",
        context: Any = None,
        on_change: Callable[[], None] | None = None,
        serving: bool = True,
    ) -> None:
        self.index = index
        # In logs: "worker 0", or "model NAME worker 0" when several models are served.
        self.who = f"model {model_name} worker {index}" if model_name else f"worker {index}"
        self.serving = serving
        self._on_change = on_change  # readiness changed: the pool may promote a spare
        self.requests = WorkerRequests(on_batch)
        self.process = WorkerProcess(
            index, self.who, spec, policy, (log_level, log_format),
            on_message=self.requests.deliver,
            on_started=self.requests.attach,
            on_lost=self._lost,
            on_ready=self._changed,
            on_restart=on_restart,
            context=context,
        )

    async def start(self) -> None:
        await self.process.start()

    async def stop(self, timeout: float = 10.0) -> None:
        await self.process.stop(timeout)
        self.requests.fail_all(WorkerUnavailable("the server is shutting down"))

    @property
    def fatal(self) -> Any:
        return self.process.fatal

    @property
    def ready(self) -> bool:
        return self.process.ready

    @property
    def generation(self) -> int:
        return self.process.generation

    @property
    def info(self) -> WorkerReady | None:
        return self.process.info

    @property
    def in_flight(self) -> int:
        return self.requests.in_flight

    @property
    def queued_items(self) -> int:
        return self.requests.queued_items

    async def infer(self, call: Call, deadline: float) -> InferResult:
        if not self.process.ready:
            raise WorkerUnavailable("the model is not ready")
        return await self.requests.infer(call, deadline)

    async def stream(self, call: Call, deadline: float) -> AsyncIterator[StreamChunk | InferResult]:
        if not self.process.ready:
            raise WorkerUnavailable("the model is not ready")
        # aclosing: a consumer that stops cancels the request at once, not at garbage collection.
        async with aclosing(self.requests.stream(call, deadline)) as items:
            async for item in items:
                yield item

    def _lost(self, reason: str) -> None:
        self.requests.fail_all(WorkerDied(reason))
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
