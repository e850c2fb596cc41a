"""The front-end's logging: records and access lines are written by one
thread off the event loop (why: docs/design.md#access-log)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from time import time as _wall_clock  # log()'s `time` argument shadows the module
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from ..common.logsetup import FIELDS, stderr_handler


class _HandOffHandler(logging.Handler):
    """Hands each record to the writer thread as is: it is formatted there.
    (Safe in-process: our log arguments are not mutated after the call.)"""

    def __init__(self, writer: OffLoopLogging) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.submit(record)


class OffLoopLogging:
    """The front-end's logging: records are queued on the calling thread and
    formatted and written to stderr by one writer thread, so an access line
    per request (or a slow stderr pipe) costs the event loop an append, not
    a format and a blocking write.

    The writer wakes at most once per ``flush_interval_s`` while records
    keep coming (and blocks while none do): waking a thread is a system call
    and, on a small VM, an inter-processor interrupt; once per request it
    cost the event loop as much as the HTTP write itself. Lines reach stderr
    up to that interval late. ``start``/``stop`` bracket the server.
    """

    def __init__(self, level: str, log_format: str, role: str, flush_interval_s: float = 0.05) -> None:
        self._target = stderr_handler(log_format, role)
        self._level = level.upper()
        self._flush_interval_s = flush_interval_s
        self._pending: deque[logging.LogRecord] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        root = logging.getLogger()
        root.handlers[:] = [_HandOffHandler(self)]
        root.setLevel(self._level)
        self._thread = threading.Thread(target=self._write_until_stopped, name="log-writer", daemon=True)
        self._thread.start()

    def submit(self, record: logging.LogRecord | _AccessEntry) -> None:
        """From any thread. (deque.append is atomic.)"""
        self._pending.append(record)
        if not self._wake.is_set():
            self._wake.set()

    def access_logger_class(self) -> type[AccessLogger]:
        """An aiohttp access logger whose lines go straight to this writer."""
        return type("OffLoopAccessLogger", (AccessLogger,), {"sink": self})

    def stop(self) -> None:
        """Write what is queued, then hand stderr back to the calling thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        logging.getLogger().handlers[:] = [self._target]
        while self._pending:  # anything logged while the thread was exiting
            self._write_pending()

    def _write_until_stopped(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._write_pending()
            if self._stopping:
                return
            time.sleep(self._flush_interval_s)  # let the next lines gather

    def _write_pending(self) -> None:
        # What is queued now leaves in one write: one system call (and one
        # hold of the handler's lock) per wake-up, not one per line. Only
        # what is queued now: under a steady stream the batch stays bounded.
        lines = []
        record = None
        for _ in range(len(self._pending)):
            item = self._pending.popleft()
            record = item if isinstance(item, logging.LogRecord) else None
            try:
                record = record or item.record()
                lines.append(self._target.format(record))
            except Exception:  # noqa: BLE001 - logging's own policy: report, carry on
                self._target.handleError(record)  # (None when the record itself could not be built)
        if lines:
            self._target.acquire()
            try:
                self._target.stream.write("\n".join(lines) + "\n")
                self._target.flush()
            except Exception:  # noqa: BLE001 - e.g. stderr closed
                self._target.handleError(record)
            finally:
                self._target.release()


_ACCESS_MESSAGE = "%s %s %d %.1fms id=%s batch=%s"


@dataclass(frozen=True, slots=True)
class _AccessEntry:
    """An access line as the event loop hands it over: the writer thread
    builds its LogRecord. (Building a LogRecord walks the stack and reads a
    dozen attributes: on the loop, once per request, that was ~50 us of the
    ~1.2 ms the loop spends on a MiniLM request.)"""

    logger: str
    created: float
    args: tuple[Any, ...]
    fields: dict[str, Any]

    def record(self) -> logging.LogRecord:
        record = logging.LogRecord(self.logger, logging.INFO, "", 0, _ACCESS_MESSAGE, self.args, None)
        record.created = self.created
        record.msecs = (self.created - int(self.created)) * 1000.0
        setattr(record, FIELDS, self.fields)
        return record


class AccessLogger(AbstractAccessLogger):
    """One line per request: id, method, route, status, latency, batch size."""

    # Set on the subclass from OffLoopLogging.access_logger_class: its lines
    # skip the logging machinery on the event loop.
    sink: OffLoopLogging | None = None

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": response.headers.get("X-Request-Id"),
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "latency_ms": round(time * 1000, 3),
            "batch_size": int(response.headers.get("X-Batch-Size", 0)) or None,
            "remote": request.remote,
        }
        args = (request.method, request.path, response.status, time * 1000,
                fields["request_id"] or "-", fields["batch_size"] or "-")
        if self.sink is not None and self._plain_logger():
            self.sink.submit(_AccessEntry(self.logger.name, _wall_clock(), args, fields))
        else:
            self.logger.info(_ACCESS_MESSAGE, *args, extra={FIELDS: fields})

    def _plain_logger(self) -> bool:
        # The hand-off skips the logger's own filters and handlers: take it
        # only while it has none and its lines go up to the root's writer.
        return self.logger.propagate and not self.logger.filters and not self.logger.handlers
