"""The pipe transport between the two processes: frames over two one-way pipes.

Each message is one frame: an 8-byte header (the pickle's length and an
attached body's, big-endian), the pickle (protocol 5: faster than dill for
these flat records), then a large answer's body as raw bytes beside it.
Why this framing and one pipe per direction: docs/design.md#the-pipe.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import pickle
import select
import struct
import threading
from dataclasses import replace
from typing import Any

from ..ipc import FromWorker, InferResult, ToWorker

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
_HEADER = struct.Struct("!II")  # frame: pickle length, attached body length
# An answer body at least this long travels beside the pickle, not in it
# (pickling a large body cost more than writing it as one more iovec).
_ATTACH_BYTES = 16 * 1024
_READ_CHUNK = 256 * 1024
_PIPE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def open_pipes(context: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The two one-way pipes between the front-end and one worker.

    Returns the front-end's ends and the worker's ends, each as
    ``(receive, send)`` connections to hand to ``Channel``. One pipe per
    direction: on a single duplex socket, reading an answer also woke the
    worker's thread waiting on the same socket (a shared wait queue), a
    wasted wake-up on every answer.
    """
    to_worker_receive, to_worker_send = context.Pipe(duplex=False)
    to_front_receive, to_front_send = context.Pipe(duplex=False)
    return (to_front_receive, to_worker_send), (to_worker_receive, to_front_send)


class Channel:
    """One side of the two pipes between the front-end and a worker.

    Each message is one frame: an 8-byte header (the pickle's length and the
    attached body's, big-endian), the pickle, then a large answer's body as
    raw bytes (not copied into the pickle). We frame it ourselves on the
    pipes' descriptors (rather than use ``Connection.send_bytes``) so a frame
    leaves in one ``writev`` without copying the payload, and whatever has
    arrived is read in one call into a reused buffer and decoded from there
    (several frames per read under load; only a partial frame is kept).

    Reads never block inside a read call: ``read_available`` returns what
    has arrived (an event loop's reader callback), ``receive`` first waits
    for the pipe with a timeout (the worker's model thread, which must wake
    at its batch deadline). ``send`` blocks until the frame is written and
    is safe from several threads; an event loop sends through a
    ``LoopWriter`` instead, which never blocks.
    """

    def __init__(self, ends: tuple[Any, Any]) -> None:
        receive, send = ends
        # Take the descriptors over: the Connection objects must not close them too.
        self._receive_fd = os.dup(receive.fileno())
        self._send_fd = os.dup(send.fileno())
        receive.close()
        send.close()
        _widen_pipe(self._send_fd)
        os.set_blocking(self._receive_fd, False)  # this end is ours alone
        self._readable = select.poll()
        self._readable.register(self._receive_fd, select.POLLIN)
        self._send_lock = threading.Lock()
        self._closed = False
        self._chunk = bytearray(_READ_CHUNK)  # every read lands here first (no allocation per read)
        self._unread = bytearray()  # bytes of frames not yet complete

    def fileno(self) -> int:
        """The descriptor to wait on for incoming messages."""
        return self._receive_fd

    def writer_fileno(self) -> int:
        """The descriptor to wait on for room to send."""
        return self._send_fd

    def send(self, message: ToWorker | FromWorker) -> None:
        frame = encode_frame(message)
        with self._send_lock:
            self._check_open()
            while frame:
                frame = _unwritten(frame, os.writev(self._send_fd, frame))

    def send_some(self, frame: list[Any]) -> list[Any]:
        """Write what the pipe takes now of a frame (from ``encode_frame``),
        without blocking; returns the rest, empty once all is written.
        Requires ``set_nonblocking_writes``."""
        with self._send_lock:
            self._check_open()
            try:
                written = os.writev(self._send_fd, frame)
            except (BlockingIOError, InterruptedError):
                return frame
        return _unwritten(frame, written)

    def set_nonblocking_writes(self) -> None:
        """Required before ``send_some`` (the send end is ours alone)."""
        os.set_blocking(self._send_fd, False)

    def _check_open(self) -> None:
        if self._closed:  # never write to a descriptor number reused since
            raise OSError(errno.EBADF, "the channel is closed")

    def receive(self, timeout: float | None) -> list[ToWorker | FromWorker]:
        """Every message that has arrived; if none has, wait up to
        ``timeout`` seconds (None: as long as it takes, 0: not at all) for
        some. ``[]`` when the wait ran out; EOFError once the other end is
        gone and every message before that was returned."""
        messages, closed = self.read_available()
        if not messages and not closed and timeout != 0:
            # poll() counts whole milliseconds: round up, so a deadline's
            # wake-up is never early (an early one would only wait again).
            self._readable.poll(None if timeout is None else math.ceil(timeout * 1000.0))
            messages, closed = self.read_available()
        if closed and not messages:
            raise EOFError("the other end closed the channel")
        return messages

    def readable_now(self) -> bool:
        """Whether a message (or the end of the channel) is waiting to be read."""
        return bool(self._unread) or bool(self._readable.poll(0))

    def read_available(self) -> tuple[list[ToWorker | FromWorker], bool]:
        """Every complete message readable now, without blocking, and whether
        the other end has closed."""
        messages: list[ToWorker | FromWorker] = []
        closed = False
        while True:
            try:
                count = os.readv(self._receive_fd, [self._chunk])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the other side is gone
                closed = True
                break
            if count == 0:
                closed = True
                break
            self._take_frames(count, messages)
            if count < _READ_CHUNK:
                break  # drained: spare the syscall that would say EAGAIN
        return messages, closed

    def _take_frames(self, count: int, messages: list[ToWorker | FromWorker]) -> None:
        """Decode the whole frames among the ``count`` bytes just read (after
        any partial frame kept from before); keep the partial tail."""
        with memoryview(self._chunk)[:count] as data:
            if not self._unread:  # the usual case: decode straight from the read buffer
                used = _decode_frames(data, messages)
                self._unread += data[used:]
                return
            self._unread += data
        used = _decode_frames(self._unread, messages)
        del self._unread[:used]

    def close(self) -> None:
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._send_fd)
            os.close(self._receive_fd)


def encode_frame(message: ToWorker | FromWorker) -> list[Any]:
    """A message as the buffers of one frame: header, pickle, attached body."""
    if isinstance(message, InferResult) and len(message.body) >= _ATTACH_BYTES:
        body = message.body
        payload = pickle.dumps(replace(message, body=b""), protocol=_PICKLE_PROTOCOL)
        return [_HEADER.pack(len(payload), len(body)), payload, body]
    payload = pickle.dumps(message, protocol=_PICKLE_PROTOCOL)
    return [_HEADER.pack(len(payload), 0), payload]


def _decode_frames(buffer: Any, messages: list[ToWorker | FromWorker]) -> int:
    """Append the messages of the whole frames at the start of ``buffer``;
    returns how many bytes they took."""
    offset = 0
    with memoryview(buffer) as view:
        while len(view) - offset >= _HEADER.size:
            size, attached = _HEADER.unpack_from(view, offset)
            start = offset + _HEADER.size
            end = start + size + attached
            if end > len(view):
                break
            message = pickle.loads(view[start : start + size])
            if attached:
                message = replace(message, body=bytes(view[start + size : end]))
            messages.append(message)
            offset = end
    return offset


def _unwritten(frame: list[Any], written: int) -> list[Any]:
    """What is left of a frame's buffers after a partial write."""
    rest: list[Any] = []
    for part in frame:
        if written >= len(part):
            written -= len(part)
            continue
        rest.append(memoryview(part)[written:])
        written = 0
    return rest


def _widen_pipe(fd: int) -> None:
    # One answer can be hundreds of KiB (a token vector per input token):
    # with the default 64 KiB pipe the writer would block and the reader
    # wake once per 64 KiB. Linux lets any process ask for up to 1 MiB.
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass  # not Linux, or a lower pipe-max-size: the default still works
