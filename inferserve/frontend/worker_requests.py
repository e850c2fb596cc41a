"""The request side of one worker: send requests, match answers to them.

Pending requests are ``asyncio.Future``s keyed by request id; streams are
queues of chunks ending with the final ``InferResult``. The process side
(``WorkerProcess``) hands this class the pipe's writer when a worker starts
(``attach``), every answer it reads (``deliver``), and the worker's death
(``fail_all``): the requests then in flight fail at once with ``WorkerDied``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

from ..ipc import BatchReport, Call, CancelRequest, FromWorker, InferRequest, InferResult, StreamChunk
from .errors import DeadlineExceeded, WorkerDied, WorkerUnavailable
from .pipe_io import LoopWriter


class WorkerRequests:
    """The requests sent to one worker process and not yet answered."""

    def __init__(self, on_batch: Callable[[BatchReport], None] | None = None) -> None:
        self._on_batch = on_batch
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[InferResult]] = {}
        # Streaming requests: chunks, then the final InferResult (or an error).
        self._streams: dict[int, asyncio.Queue[StreamChunk | InferResult | Exception]] = {}
        self._writer: LoopWriter | None = None
        self._queued_items = 0  # inputs sent and not answered: the load measure

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._streams)

    @property
    def queued_items(self) -> int:
        return self._queued_items

    def attach(self, writer: LoopWriter | None) -> None:
        """The pipe to the worker now running (None: no worker)."""
        self._writer = writer

    def fail_all(self, error: WorkerUnavailable) -> None:
        """Fail every request in flight (the worker died or is stopping)."""
        self._writer = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        for stream in self._streams.values():
            stream.put_nowait(error)

    def deliver(self, message: FromWorker) -> None:
        """An answer, a stream's chunk or a batch report read from the worker."""
        if isinstance(message, InferResult):
            if message.batch is not None and self._on_batch is not None:
                self._on_batch(message.batch)  # counted before the answer is delivered
            future = self._pending.get(message.request_id)
            if future is not None and not future.done():
                future.set_result(message)
            elif message.request_id in self._streams:
                self._streams[message.request_id].put_nowait(message)
        elif isinstance(message, StreamChunk):
            stream = self._streams.get(message.request_id)
            if stream is not None:
                stream.put_nowait(message)
        elif isinstance(message, BatchReport):
            if self._on_batch is not None:
                self._on_batch(message)

    async def infer(self, call: Call, deadline: float) -> InferResult:
        writer = self._writer
        if writer is None:
            raise WorkerUnavailable("the model is not ready")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[InferResult] = loop.create_future()
        self._pending[request_id] = future
        self._queued_items += len(call.inputs)
        try:
            try:
                writer.send(InferRequest(request_id, call, deadline))
            except (OSError, ValueError) as exc:  # the pipe broke under us
                raise WorkerDied("the worker went away") from exc
            # One timer instead of wait_for's extra task hops on every answer.
            timer = loop.call_later(max(0.0, deadline - time.monotonic()), _expire, future)
            try:
                return await future
            finally:
                timer.cancel()
        except TimeoutError as exc:  # (a subclass of OSError: keep it apart)
            self._cancel(writer, request_id)
            raise DeadlineExceeded("the request's deadline passed") from exc
        except asyncio.CancelledError:  # the client went away
            self._cancel(writer, request_id)
            raise
        finally:
            self._pending.pop(request_id, None)
            self._queued_items -= len(call.inputs)

    async def stream(self, call: Call, deadline: float) -> AsyncIterator[StreamChunk | InferResult]:
        """Yield each generated token's chunk, then the final InferResult."""
        writer = self._writer
        if writer is None:
            raise WorkerUnavailable("the model is not ready")
        request_id = next(self._ids)
        queue: asyncio.Queue[StreamChunk | InferResult | Exception] = asyncio.Queue()
        self._streams[request_id] = queue
        try:
            try:
                writer.send(InferRequest(request_id, call, deadline))
            except (OSError, ValueError) as exc:
                raise WorkerDied("the worker went away") from exc
            while True:
                item = await asyncio.wait_for(queue.get(), timeout=max(0.0, deadline - time.monotonic()))
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, InferResult):
                    return
        except TimeoutError as exc:
            self._cancel(writer, request_id)
            raise DeadlineExceeded("the request's deadline passed") from exc
        except (asyncio.CancelledError, GeneratorExit):  # client gone, or consumer stopped
            self._cancel(writer, request_id)
            raise
        finally:
            self._streams.pop(request_id, None)

    def _cancel(self, writer: LoopWriter, request_id: int) -> None:
        if writer is self._writer:  # not a worker restarted since
            try:
                writer.send(CancelRequest(request_id))
            except (OSError, ValueError):
                pass


def _expire(future: asyncio.Future[InferResult]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
