"""The event loop's side of a worker's pipes: read and send without blocking.

The loop is woken straight by the pipe (``loop.add_reader``) and sends
through ``add_writer`` when a pipe is full: no thread sits between the pipe
and the loop (why: docs/design.md#the-pipe).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable

from ..common.transport import Channel, encode_frame
from ..ipc import FromWorker, ToWorker

log = logging.getLogger("inferserve")


class LoopReader:
    """Reads a channel on an asyncio event loop (``loop.add_reader``).

    The loop is woken straight by the pipe and handles each message in the
    same turn: no reader thread, no ``call_soon_threadsafe`` hand-off (one
    thread wake-up fewer per answer). Messages are small records whose body
    the worker has already encoded, so unpickling them costs the loop little.
    ``on_closed`` runs once, when the other end goes away.
    """

    def __init__(
        self,
        loop: Any,
        channel: Channel,
        on_message: Callable[[FromWorker], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._channel = channel
        self._on_message = on_message
        self._on_closed = on_closed
        self._fd = channel.fileno()
        self._reading = False

    def start(self) -> None:
        self._loop.add_reader(self._fd, self._on_readable)
        self._reading = True

    def stop(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        messages, closed = self._channel.read_available()
        for message in messages:
            try:
                self._on_message(message)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - one bad message must not drop the rest
                log.exception("cannot handle %s from the worker", type(message).__name__)
        if closed:
            self.stop()
            self._on_closed()


class LoopWriter:
    """Sends on a channel from an asyncio event loop without ever blocking it.

    The worker reads its pipe only between forward passes, so a burst of
    large requests can fill the pipe (1 MiB) while the model runs. A frame
    the pipe cannot take at once waits here, in order, and the loop writes
    the rest when the pipe has room (``loop.add_writer``). The backlog is
    bounded by admission control (requests in flight x body size limit).
    """

    def __init__(self, loop: Any, channel: Channel) -> None:
        self._loop = loop
        self._channel = channel
        self._fd = channel.writer_fileno()
        self._backlog: deque[list[Any]] = deque()
        channel.set_nonblocking_writes()

    @property
    def backlog(self) -> int:
        """Frames waiting for room in the pipe."""
        return len(self._backlog)

    def send(self, message: ToWorker) -> None:
        """Queue one message; OSError when the channel is closed or broken."""
        frame = encode_frame(message)
        if not self._backlog:
            frame = self._channel.send_some(frame)
            if not frame:
                return
            self._loop.add_writer(self._fd, self._flush)
        self._backlog.append(frame)

    def stop(self) -> None:
        """Drop what is still waiting (the worker is gone or being stopped)."""
        if self._backlog:
            self._backlog.clear()
            self._loop.remove_writer(self._fd)

    def _flush(self) -> None:
        try:
            while self._backlog:
                rest = self._channel.send_some(self._backlog[0])
                if rest:
                    self._backlog[0] = rest
                    return
                self._backlog.popleft()
        except OSError:  # the worker is gone: its EOF fails the pending requests
            self._backlog.clear()
        self._loop.remove_writer(self._fd)
