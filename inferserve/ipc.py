"""The pipe protocol between the front-end and a worker process.

Messages are frozen dataclasses. They travel over a ``multiprocess`` Pipe
(a socket pair) as length-prefixed frames of plain pickle (protocol 5 is
faster than dill for these flat records and keeps the wire format explicit).
Many requests are in flight at once over one pipe, matched by ``request_id``.
"""

from __future__ import annotations

import enum
import logging
import os
import pickle
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
_HEADER = struct.Struct("!I")  # frame length
_READ_CHUNK = 256 * 1024

log = logging.getLogger("inferserve")


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


@dataclass(frozen=True, slots=True)
class EmbedOptions:
    normalize: bool | None = None  # None: as the model's config says
    dimensions: int | None = None  # keep the first N dimensions
    response: str = "tei"  # "tei" (list of vectors) or "openai"
    encoding_format: str = "float"  # openai: "float" or "base64"
    model_name: str = ""  # openai: echoed as "model"


# ---- front-end -> worker -------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class CancelRequest:
    request_id: int


@dataclass(frozen=True, slots=True)
class StopWorker:
    """Finish what is queued, then exit."""


# ---- worker -> front-end -------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One generated token of a streaming request; its InferResult ends it."""

    request_id: int
    index: int
    token_id: int
    text: str  # what this token adds to the decoded text (may be "")


@dataclass(frozen=True, slots=True)
class BatchReport:
    """One per model batch actually run: lets the front-end count batches."""

    size: int
    padded_tokens: int
    compute_ms: float


@dataclass(frozen=True, slots=True)
class WorkerReady:
    model: str
    task: str
    device: str
    dtype: str
    load_seconds: float
    load_steps: dict[str, float] = field(default_factory=dict)
    embedding_dimension: int | None = None  # set when the model serves /embed


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """The worker could not start (e.g. the model does not load)."""

    message: str


ToWorker = InferRequest | CancelRequest | StopWorker
FromWorker = InferResult | StreamChunk | BatchReport | WorkerReady | WorkerFailed


class Channel:
    """One end of a duplex socket pair that carries protocol messages.

    Each message is one frame: a 4-byte big-endian length, then the pickle.
    We frame it ourselves on the pair's socket (rather than use
    ``Connection.send_bytes``) so a frame leaves in one ``sendmsg`` without
    copying the payload, arrives in one ``recv_into``, and can be read
    without blocking from an event loop (``read_available``).

    ``send`` is safe from several threads. A channel is read in one style:
    blocking ``recv`` on one dedicated thread (the worker), or
    ``read_available`` from an event loop's reader callback (the front-end).
    """

    def __init__(self, connection: Any) -> None:
        # Take the descriptor over: the Connection object must not close it too.
        self._socket = socket.socket(fileno=os.dup(connection.fileno()))
        connection.close()
        self._socket.setblocking(True)
        self._send_lock = threading.Lock()
        self._unread = bytearray()  # read_available: bytes of frames not yet complete

    def fileno(self) -> int:
        return self._socket.fileno()

    def send(self, message: ToWorker | FromWorker) -> None:
        payload = pickle.dumps(message, protocol=_PICKLE_PROTOCOL)
        header = _HEADER.pack(len(payload))
        with self._send_lock:
            sent = self._socket.sendmsg([header, payload])
            if sent < len(header):  # rare: a nearly full buffer took part of the header
                self._socket.sendall(header[sent:])
                sent = len(header)
            if sent - len(header) < len(payload):
                self._socket.sendall(memoryview(payload)[sent - len(header):])

    def recv(self) -> ToWorker | FromWorker:
        """Block until the next message; EOFError once the other end is gone."""
        (size,) = _HEADER.unpack(self._recv_exactly(_HEADER.size))
        return pickle.loads(self._recv_exactly(size))

    def read_available(self) -> tuple[list[ToWorker | FromWorker], bool]:
        """Every complete message readable now, without blocking, and whether
        the other end has closed. For an event loop's reader callback."""
        closed = False
        while True:
            try:
                chunk = self._socket.recv(_READ_CHUNK, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ECONNRESET and the like: the worker is gone
                closed = True
                break
            if not chunk:
                closed = True
                break
            self._unread += chunk
            if len(chunk) < _READ_CHUNK:
                break  # drained: spare the syscall that would say EAGAIN
        return self._complete_frames(), closed

    def _complete_frames(self) -> list[ToWorker | FromWorker]:
        messages: list[ToWorker | FromWorker] = []
        buffer, offset = self._unread, 0
        with memoryview(buffer) as view:
            while len(buffer) - offset >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer, offset)
                end = offset + _HEADER.size + size
                if end > len(buffer):
                    break
                with view[offset + _HEADER.size : end] as frame:
                    messages.append(pickle.loads(frame))
                offset = end
        if offset:
            del buffer[:offset]
        return messages

    def _recv_exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        received = 0
        while received < size:
            count = self._socket.recv_into(view[received:], size - received)
            if count == 0:
                raise EOFError("the other end closed the channel")
            received += count
        return buffer

    def close(self) -> None:
        self._socket.close()


class LoopReader:
    """Reads a channel on an asyncio event loop (``loop.add_reader``).

    The loop is woken straight by the socket and handles each message in the
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
