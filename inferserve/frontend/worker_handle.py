"""The front-end's handle on one worker process: spawn, dispatch, restart.

Lives in the front-end process and never imports torch: the child is
spawned by entry-point name (``common.launch``). Pending requests
are ``asyncio.Future``s keyed by request id; the event loop reads results
from the pipe itself (``LoopReader``) and resolves them. A worker that
dies fails its in-flight requests at once (``WorkerDied``) and is restarted
with an exponential backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import multiprocess

from ..common.config import BatchPolicy, ModelSpec
from ..common.launch import run_entry_point
from ..common.transport import Channel, open_pipes
from ..ipc import (
    BatchReport,
    Call,
    CancelRequest,
    FromWorker,
    InferRequest,
    InferResult,
    StopWorker,
    StreamChunk,
    WorkerFailed,
    WorkerReady,
)
from .errors import DeadlineExceeded, WorkerDied, WorkerUnavailable
from .pipe_io import LoopReader, LoopWriter

log = logging.getLogger("inferserve")

# The worker process's entry point, imported only in the spawned child.
WORKER_ENTRY_POINT = "inferserve.worker:worker_main"
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 10.0


class WorkerHandle:
    """One worker process: spawn it, talk to it, notice its death, restart it."""

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
    ) -> None:
        self.index = index
        # In logs: "worker 0", or "model NAME worker 0" when several models are served.
        self.who = f"model {model_name} worker {index}" if model_name else f"worker {index}"
        self._spec = spec
        self._queued_items = 0  # inputs sent and not answered: the load measure
        self._policy = policy
        self._log_settings = (log_level, log_format)
        self._on_batch = on_batch
        self._on_restart = on_restart
        self._context = multiprocess.get_context("spawn")  # CUDA-safe, no inherited state
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[InferResult]] = {}
        # Streaming requests: chunks, then the final InferResult (or an error).
        self._streams: dict[int, asyncio.Queue[StreamChunk | InferResult | Exception]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: Any = None
        self._channel: Channel | None = None
        self._reader: LoopReader | None = None
        self._writer: LoopWriter | None = None
        self._generation = 0
        self._info: WorkerReady | None = None
        self._ready = False
        self._stopping = False
        self._backoff_s = _BACKOFF_FIRST_S
        self._restart_task: asyncio.Task[None] | None = None
        # Resolved with an error message if the model cannot be loaded at all
        # on first start: the server then exits instead of retrying forever.
        self.fatal: asyncio.Future[str] | None = None

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Spawn the worker; readiness is reported later (see ``ready``)."""
        self._loop = asyncio.get_running_loop()
        self.fatal = self._loop.create_future()
        await self._spawn()

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish its queue, then make sure it is gone. A worker
        still loading has nothing queued and reads no message until it is
        ready: it is terminated at once instead of waited for."""
        if not self._ready:
            timeout = 0.0
            if self._process is not None and self._process.is_alive():
                log.info("%s: stopped while loading", self.who)
        self._stopping = True
        self._ready = False
        if self._restart_task is not None:
            self._restart_task.cancel()
        process, writer = self._process, self._writer
        if process is not None and writer is not None:
            try:
                writer.send(StopWorker())
            except (OSError, ValueError):
                pass
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _join_or_kill, process, timeout)
            self._close_pipes()
        self._fail_pending(WorkerUnavailable("the server is shutting down"))

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._streams)

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def info(self) -> WorkerReady | None:
        return self._info

    # ---- requests ----------------------------------------------------------

    async def infer(self, call: Call, deadline: float) -> InferResult:
        if not self._ready or self._writer is None:
            raise WorkerUnavailable("the model is not ready")
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        future: asyncio.Future[InferResult] = loop.create_future()
        self._pending[request_id] = future
        writer = self._writer
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
        if not self._ready or self._writer is None:
            raise WorkerUnavailable("the model is not ready")
        request_id = next(self._ids)
        queue: asyncio.Queue[StreamChunk | InferResult | Exception] = asyncio.Queue()
        self._streams[request_id] = queue
        writer = self._writer
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

    # ---- worker process ----------------------------------------------------

    async def _spawn(self) -> None:
        self._generation += 1
        generation = self._generation
        front_ends, worker_ends = open_pipes(self._context)
        process = self._context.Process(
            target=run_entry_point,
            args=(WORKER_ENTRY_POINT, worker_ends, self._spec, self._policy, *self._log_settings),
            name=f"inferserve-worker-{self.index}",
            daemon=True,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, process.start)
        for end in worker_ends:
            end.close()  # else our copies keep the pipes open after the child dies
        self._process = process
        self._channel = Channel(front_ends)
        log.info("%s: process %d started (generation %d)", self.who, process.pid, generation)
        self._reader = LoopReader(
            loop,
            self._channel,
            on_message=lambda m: self._on_message(generation, m),
            on_closed=lambda: self._on_closed(generation),
        )
        self._reader.start()
        self._writer = LoopWriter(loop, self._channel)

    def _on_message(self, generation: int, message: FromWorker) -> None:
        if generation != self._generation:
            return
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
        elif isinstance(message, WorkerReady):
            self._info = message
            self._ready = not self._stopping
            self._backoff_s = _BACKOFF_FIRST_S
            log.info(
                "%s ready: model %s, task %s, device %s, dtype %s (loaded in %.1fs)",
                self.who, message.model, message.task, message.device, message.dtype, message.load_seconds,
            )
        elif isinstance(message, WorkerFailed):
            log.error("%s failed to load the model: %s", self.who, message.message)
            if self._info is None and self.fatal is not None and not self.fatal.done():
                self.fatal.set_result(message.message)

    def _on_closed(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._ready = False
        self._close_pipes()
        self._fail_pending(WorkerDied(f"worker {self.index} died"))
        if self._stopping or (self.fatal is not None and self.fatal.done()):
            return
        exitcode = self._process.exitcode if self._process is not None else None
        log.warning("%s exited (code %s); restarting in %.1fs", self.who, exitcode, self._backoff_s)
        self._restart_task = asyncio.get_running_loop().create_task(self._restart(self._backoff_s))
        self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)

    def _close_pipes(self) -> None:
        """Take the pipes off the event loop, then close them (in that order:
        the loop must never watch a descriptor number reused since)."""
        if self._reader is not None:
            self._reader.stop()
        if self._writer is not None:
            self._writer.stop()
        if self._channel is not None:
            self._channel.close()

    async def _restart(self, delay: float) -> None:
        old = self._process
        if old is not None:
            await asyncio.get_running_loop().run_in_executor(None, _join_or_kill, old, 1.0)
        await asyncio.sleep(delay)
        if self._stopping:
            return
        if self._on_restart is not None:
            self._on_restart()
        await self._spawn()

    def _fail_pending(self, error: WorkerUnavailable) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        for stream in self._streams.values():
            stream.put_nowait(error)


def _expire(future: asyncio.Future[InferResult]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _join_or_kill(process: Any, timeout: float) -> None:
    """Blocking: wait for a worker to exit, escalating to SIGTERM then SIGKILL."""
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join()
