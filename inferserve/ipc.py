"""The pipe protocol between the front-end and a worker process.

Messages are frozen dataclasses. They travel over a ``multiprocess`` Pipe as
pickled bytes (``send_bytes``/``recv_bytes``): plain pickle protocol 5 is
faster than dill for these flat records and keeps the wire format explicit.
Many requests are in flight at once over one pipe, matched by ``request_id``.
"""

from __future__ import annotations

import enum
import pickle
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


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
    """One end of a duplex pipe that carries protocol messages.

    ``send`` is safe from several threads; ``recv`` blocks, so only a
    dedicated thread may call it (never the event loop).
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._send_lock = threading.Lock()

    def send(self, message: ToWorker | FromWorker) -> None:
        payload = pickle.dumps(message, protocol=_PICKLE_PROTOCOL)
        with self._send_lock:
            self._connection.send_bytes(payload)

    def recv(self) -> ToWorker | FromWorker:
        return pickle.loads(self._connection.recv_bytes())

    def close(self) -> None:
        self._connection.close()


def start_reader_thread(
    channel: Channel,
    on_message: Callable[[FromWorker], None],
    on_closed: Callable[[], None],
    name: str,
) -> threading.Thread:
    """Read messages on a daemon thread and hand each to ``on_message``.

    The callbacks run on the reader thread; an asyncio caller wraps them
    with ``loop.call_soon_threadsafe`` so the event loop never blocks on
    ``recv``. ``on_closed`` runs once when the other end goes away.
    """

    def read_until_closed() -> None:
        try:
            while True:
                on_message(channel.recv())  # type: ignore[arg-type]
        except (EOFError, OSError):
            pass
        finally:
            on_closed()

    thread = threading.Thread(target=read_until_closed, name=name, daemon=True)
    thread.start()
    return thread
