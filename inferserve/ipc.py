"""The pipe protocol between the front-end and a worker process.

Messages are frozen dataclasses. They travel over two one-way ``multiprocess``
pipes (one per direction) as length-prefixed frames of plain pickle (protocol
5 is faster than dill for these flat records and keeps the wire format
explicit); a large answer body rides beside the pickle as raw bytes. Many
requests are in flight at once, matched by ``request_id``.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import logging
import math
import operator
import os
import pickle
import select
import struct
import threading
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
_HEADER = struct.Struct("!II")  # frame: pickle length, attached body length
# An answer body at least this long travels beside the pickle, not in it:
# pickling a 130 KiB body cost 15-110 us a side here (buffer growth and the
# page faults of fresh allocations), writing it as one more iovec costs a copy.
_ATTACH_BYTES = 16 * 1024
_READ_CHUNK = 256 * 1024
_PIPE_BYTES = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

log = logging.getLogger("inferserve")


def _pickled_by_fields(cls: type) -> type:
    """Pickle a frozen slots dataclass as a call of its constructor.

    Its default pickling stores a state tuple and restores it through a
    ``__setstate__`` that sets each field with ``object.__setattr__``; as a
    constructor call both sides are about twice as fast, and every message
    is pickled once and unpickled once on the path of each request.
    """
    names = tuple(f.name for f in fields(cls))
    # The call passes every field positionally, in order.
    assert all(f.init and not f.kw_only for f in fields(cls)), cls
    if len(names) > 1:
        values: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    else:  # attrgetter of one name returns the value itself, not a tuple
        values = lambda message: tuple(getattr(message, name) for name in names)  # noqa: E731

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return (type(self), values(self))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


class Outcome(enum.Enum):
    """How the worker finished a request; the front-end maps it to HTTP."""

    OK = "ok"
    INVALID_INPUT = "invalid_input"  # the model/pipeline rejected this input
    INVALID_PARAMETERS = "invalid_parameters"  # the pipeline rejected `parameters`
    DEADLINE_EXCEEDED = "deadline_exceeded"  # dropped before compute: too late
    INTERNAL = "internal"  # our bug or a device failure


class RequestKind(enum.Enum):
    PIPELINE = "pipeline"  # the transformers pipeline's own output
    EMBED = "embed"  # one pooled sentence embedding per input
    STREAM = "stream"  # text generation, one StreamChunk per token, then the result


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class EmbedOptions:
    normalize: bool | None = None  # None: as the model's config says
    dimensions: int | None = None  # keep the first N dimensions
    response: str = "tei"  # "tei" (list of vectors) or "openai"
    encoding_format: str = "float"  # openai: "float" or "base64"
    model_name: str = ""  # openai: echoed as "model"


# ---- front-end -> worker -------------------------------------------------


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class InferRequest:
    request_id: int
    inputs: tuple[Any, ...]
    params: dict[str, Any]
    # True when the client sent one input (not a list): answer with one output.
    single: bool
    # Absolute time.monotonic() deadline; CLOCK_MONOTONIC is shared by all
    # processes on the host, so both sides read the same clock.
    deadline: float
    kind: RequestKind = RequestKind.PIPELINE
    embed: EmbedOptions | None = None


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class CancelRequest:
    request_id: int


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class StopWorker:
    """Finish what is queued, then exit."""


# ---- worker -> front-end -------------------------------------------------


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class InferResult:
    request_id: int
    outcome: Outcome
    # OK: the JSON-encoded output, ready to write to the socket (the worker
    # encodes so that the event loop never serialises model outputs).
    body: bytes = b""
    message: str = ""
    batch_size: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    # The report of the batch that computed this answer, when the worker
    # sends it along instead of as a message of its own (one frame fewer).
    batch: BatchReport | None = None


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One generated token of a streaming request; its InferResult ends it."""

    request_id: int
    index: int
    token_id: int
    text: str  # what this token adds to the decoded text (may be "")


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class BatchReport:
    """One per model batch actually run: lets the front-end count batches."""

    size: int
    padded_tokens: int
    compute_ms: float


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class WorkerReady:
    model: str
    task: str
    device: str
    dtype: str
    load_seconds: float
    load_steps: dict[str, float] = field(default_factory=dict)
    embedding_dimension: int | None = None  # set when the model serves /embed


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """The worker could not start (e.g. the model does not load)."""

    message: str


ToWorker = InferRequest | CancelRequest | StopWorker
FromWorker = InferResult | StreamChunk | BatchReport | WorkerReady | WorkerFailed


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
