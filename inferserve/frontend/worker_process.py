"""The supervisor of one worker process: start it, notice its death, restart it, stop it.

Lives in the front-end process and never imports torch: the child runs an
entry point named by string (``common.launch``), started from the
preloaded helper when there is one (``common.preloaded_starts``). The
first restart after a worker was ready is immediate; the backoff grows only
while deaths repeat before the worker gets ready again (a crash loop).
What the worker answers goes to ``on_message``; the requests themselves
are ``WorkerRequests``' business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import multiprocess

from ..common.config import BatchPolicy, ModelSpec
from ..common.launch import run_entry_point
from ..common.transport import Channel, open_pipes
from ..ipc import FromWorker, StopWorker, WorkerFailed, WorkerReady
from .pipe_io import LoopReader, LoopWriter

log = logging.getLogger("inferserve")

# The worker process's entry point, imported only in the child.
WORKER_ENTRY_POINT = "inferserve.worker:worker_main"
# A worker that was ready is replaced at once; a worker that dies again
# before it gets ready waits this long, doubling up to the most.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


class WorkerProcess:
    """One worker process's life: start, readiness, death, restart, stop."""

    def __init__(
        self,
        index: int,
        who: str,
        spec: ModelSpec,
        policy: BatchPolicy,
        log_settings: tuple[str, str],
        on_message: Callable[[FromWorker], None],
        on_started: Callable[[LoopWriter], None],
        on_lost: Callable[[str], None],
        on_ready: Callable[[], None] | None = None,
        on_restart: Callable[[], None] | None = None,
        context: Any = None,
    ) -> None:
        self.index = index
        self.who = who
        self._spec = spec
        self._policy = policy
        self._log_settings = log_settings
        self._on_message = on_message
        self._on_started = on_started
        self._on_lost = on_lost  # called with the reason; before any restart is planned
        self._on_ready = on_ready
        self._on_restart = on_restart
        # spawn: CUDA-safe, no inherited state; or the preloaded helper's forkserver.
        self._context = context or multiprocess.get_context("spawn")
        self._process: Any = None
        self._channel: Channel | None = None
        self._reader: LoopReader | None = None
        self._writer: LoopWriter | None = None
        self._generation = 0
        self.info: WorkerReady | None = None
        self.ready = False
        self._stopping = False
        self._backoff_s = 0.0  # the next restart's delay
        self._restart_task: asyncio.Task[None] | None = None
        # Resolved with an error message if the model cannot be loaded at all
        # on first start: the server then exits instead of retrying forever.
        self.fatal: asyncio.Future[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the worker; readiness is reported later (``ready``)."""
        self.fatal = asyncio.get_running_loop().create_future()
        await self._spawn()

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish its queue, then make sure it is gone. A worker
        still loading has nothing queued and reads no message until it is
        ready: it is terminated at once instead of waited for."""
        if not self.ready:
            timeout = 0.0
            if self._process is not None and self._process.is_alive():
                log.info("%s: stopped while loading", self.who)
        self._stopping = True
        self.ready = False
        if self._restart_task is not None:
            self._restart_task.cancel()
        process, writer = self._process, self._writer
        if process is not None and writer is not None:
            try:
                writer.send(StopWorker())
            except (OSError, ValueError):
                pass
            await asyncio.get_running_loop().run_in_executor(None, join_or_kill, process, timeout)
            self._close_pipes()

    @property
    def generation(self) -> int:
        """Which start of the process this is (1, 2, ...): each restart is a new one."""
        return self._generation

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
            on_message=lambda m: self._read(generation, m),
            on_closed=lambda: self._closed(generation),
        )
        self._reader.start()
        self._writer = LoopWriter(loop, self._channel)
        self._on_started(self._writer)

    def _read(self, generation: int, message: FromWorker) -> None:
        if generation != self._generation:
            return
        if isinstance(message, WorkerReady):
            self.info = message
            self.ready = not self._stopping
            self._backoff_s = 0.0  # it got ready: its next death is not a crash loop
            log.info(
                "%s ready: model %s, task %s, device %s, dtype %s (loaded in %.1fs)",
                self.who, message.model, message.task, message.device, message.dtype, message.load_seconds,
            )
            if self.ready and self._on_ready is not None:
                self._on_ready()
        elif isinstance(message, WorkerFailed):
            log.error("%s failed to load the model: %s", self.who, message.message)
            if self.info is None and self.fatal is not None and not self.fatal.done():
                self.fatal.set_result(message.message)
        else:
            self._on_message(message)

    def _closed(self, generation: int) -> None:
        if generation != self._generation:
            return
        self.ready = False
        self._close_pipes()
        self._on_lost(f"worker {self.index} died")
        if self._stopping or (self.fatal is not None and self.fatal.done()):
            return
        # A forked worker's exit code reaches us after its pipe's EOF: often not known yet.
        exitcode = self._process.exitcode if self._process is not None else None
        delay = self._backoff_s
        log.warning("%s exited%s; restarting %s", self.who, "" if exitcode is None else f" (code {exitcode})",
                    f"in {delay:.1f}s" if delay else "now")
        self._restart_task = asyncio.get_running_loop().create_task(self._restart(delay))
        self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)

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
            await asyncio.get_running_loop().run_in_executor(None, join_or_kill, old, 1.0)
        if delay:
            await asyncio.sleep(delay)
        if self._stopping:
            return
        if self._on_restart is not None:
            self._on_restart()
        await self._spawn()


def join_or_kill(process: Any, timeout: float) -> None:
    """Blocking: wait for a worker to exit, escalating to SIGTERM then SIGKILL."""
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join()
