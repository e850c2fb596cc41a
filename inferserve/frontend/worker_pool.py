"""The pool of worker processes behind one front-end.

Dispatches each request to the ready serving worker with the fewest queued
inputs (each worker batches on its own). When a worker dies with requests
in flight, each is retried once (inference is idempotent): on another
ready worker at once, else on the replacement as soon as it is ready, while
the request's deadline allows. Requests arriving while no worker is ready
get 503 at once. Spares (``spares``) are loaded and warm but take no
traffic until a serving worker is lost: one takes its place at once, and
the dead worker, restarted, becomes a spare.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from ..common.config import BatchPolicy, ModelSpec
from ..ipc import BatchReport, Call, InferResult, StreamChunk, WorkerReady
from .errors import WorkerDied, WorkerUnavailable
from .worker_handle import WorkerHandle

log = logging.getLogger("inferserve")


def worker_specs(
    spec: ModelSpec, workers: int, devices: tuple[str, ...] = (), processes: int | None = None,
) -> list[ModelSpec]:
    """One ModelSpec per worker: devices round-robin; on CPU the cores are
    split between the ``processes`` worker processes of every model (default:
    these ``workers``) unless --num-threads says otherwise."""
    sharing = processes if processes is not None else workers
    specs = []
    for index in range(workers):
        device = devices[index % len(devices)] if devices else spec.device
        threads = spec.num_threads
        if threads is None and sharing > 1 and not device.startswith("cuda"):
            threads = max(1, (os.cpu_count() or 1) // sharing)
        specs.append(replace(spec, device=device, num_threads=threads))
    return specs


class WorkerPool:
    def __init__(
        self,
        specs: list[ModelSpec],
        policy: BatchPolicy,
        log_level: str = "info",
        log_format: str = "text",
        on_batch: Callable[[BatchReport], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        on_answer: Callable[[int], None] | None = None,
        on_retry: Callable[[], None] | None = None,
        model_name: str = "",  # in the logs, when several models are served
        context: Any = None,  # how worker processes start (the preloaded helper's); None: spawn
        spares: int = 0,  # the last ``spares`` of ``specs`` start as spares
    ) -> None:
        self._on_answer = on_answer  # called with the index of the worker that answered
        self._on_retry = on_retry
        serving = len(specs) - spares
        self.workers = [
            WorkerHandle(index, spec, policy, log_level, log_format, on_batch, on_restart, model_name,
                         context=context, on_change=self._promote_spares, serving=index < serving)
            for index, spec in enumerate(specs)
        ]
        self._stopping = False
        # Requests whose worker died, waiting for a ready worker to retry on.
        self._ready_waiters: list[asyncio.Future[None]] = []
        # Requests whose worker's pipe broke before the pool saw it die.
        self._change_waiters: list[asyncio.Future[None]] = []
        # Resolved with a message if a worker cannot load the model on its
        # first start: the server exits rather than retry forever.
        self.fatal: asyncio.Future[str] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.fatal = loop.create_future()
        for worker in self.workers:
            await worker.start()
            assert worker.fatal is not None
            worker.fatal.add_done_callback(self._on_fatal)

    def _on_fatal(self, future: asyncio.Future[str]) -> None:
        if self.fatal is not None and not self.fatal.done() and not future.cancelled():
            self.fatal.set_result(future.result())

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake_waiters()
        await asyncio.gather(*(worker.stop(timeout) for worker in self.workers))

    @property
    def ready(self) -> bool:
        return any(worker.ready and worker.serving for worker in self.workers)

    @property
    def in_flight(self) -> int:
        return sum(worker.in_flight for worker in self.workers)

    @property
    def info(self) -> WorkerReady | None:
        return next((w.info for w in self.workers if w.info is not None), None)

    def _promote_spares(self) -> None:
        """A worker's readiness changed: each serving worker that is not ready
        trades places with a ready spare (it becomes the spare once restarted)."""
        spares = [w for w in self.workers if w.ready and not w.serving]
        for worker in self.workers:
            if worker.serving and not worker.ready and spares:
                spare = spares.pop(0)
                spare.serving, worker.serving = True, False
                log.info("%s is not ready: spare %s takes its place", worker.who, spare.who)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        # Those waiting for any change of readiness (_death_seen) at every call.
        changed, self._change_waiters = self._change_waiters, []
        for waiter in changed:
            if not waiter.done():
                waiter.set_result(None)
        self._wake_ready_waiters()

    def _wake_ready_waiters(self) -> None:
        if self.ready or self._stopping:
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait_ready(self, deadline: float) -> None:
        """Until a serving worker is ready, or the deadline passes (then WorkerUnavailable)."""
        if not self.ready and not self._stopping:
            await self._woken(self._ready_waiters, deadline)

    async def _death_seen(self, worker: WorkerHandle, generation: int, deadline: float) -> None:
        """Until the pool has seen ``worker``'s start ``generation`` die. A
        request can find the pipe broken (EPIPE) a loop turn or two before
        the pipe's end is read: until then the dead worker still counts as
        ready and no spare has taken its place, so a retry chosen at once
        would go back to it."""
        while worker.ready and worker.generation == generation and not self._stopping:
            await self._woken(self._change_waiters, deadline)

    @staticmethod
    async def _woken(waiters: list[asyncio.Future[None]], deadline: float) -> None:
        """Until a future joined to ``waiters`` is resolved, or the deadline
        passes (then WorkerUnavailable)."""
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise WorkerUnavailable("no worker got ready before the request's deadline") from None

    def _least_loaded(self, exclude: tuple[WorkerHandle, ...] = ()) -> WorkerHandle:
        ready = [w for w in self.workers if w.ready and w.serving and w not in exclude]
        if not ready:
            raise WorkerUnavailable("no worker is ready")
        return min(ready, key=lambda w: (w.queued_items, w.index))

    async def infer(self, call: Call, deadline: float) -> InferResult:
        worker = self._least_loaded()
        generation = worker.generation
        try:
            result = await worker.infer(call, deadline)
        except WorkerDied:
            if time.monotonic() >= deadline:
                raise
            died = worker
            await self._death_seen(died, generation, deadline)
            await self._wait_ready(deadline)  # at once with another worker ready (or a spare)
            try:
                # Another worker first (a spare promoted in its place, say).
                worker = self._least_loaded(exclude=(died,))
            except WorkerUnavailable:
                worker = self._least_loaded()  # a lone worker's replacement (WorkerUnavailable if stopping)
            log.info("%s died with a request in flight: retrying it on worker %d", died.who, worker.index)
            if self._on_retry is not None:
                self._on_retry()
            result = await worker.infer(call, deadline)
        if self._on_answer is not None:
            self._on_answer(worker.index)
        return result

    def stream(self, call: Call, deadline: float) -> AsyncIterator[StreamChunk | InferResult]:
        # No retry: tokens may already have reached the client.
        return self._least_loaded().stream(call, deadline)
