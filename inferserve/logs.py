"""Logging set-up shared by the front-end and the worker: text or JSON lines."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

# Attribute on a LogRecord carrying structured fields (pass as extra={FIELDS: {...}}).
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        document.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def configure_logging(level: str, log_format: str, role: str) -> None:
    logging.getLogger().handlers[:] = [_stderr_handler(log_format, role)]
    logging.getLogger().setLevel(level.upper())


def _stderr_handler(log_format: str, role: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role} %(process)d] %(message)s"))
    return handler


class _DeferredFormatQueueHandler(logging.handlers.QueueHandler):
    """Queue the record as is: formatting happens on the writer thread.

    (The stdlib's ``prepare`` formats on the calling thread, which here is
    the event loop.) Safe in-process: our log arguments are not mutated."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class OffLoopLogging:
    """The front-end's logging: records are queued on the calling thread and
    formatted and written to stderr by one writer thread, so an access line
    per request (or a slow stderr pipe) costs the event loop a queue put,
    not a format and a blocking write. ``start``/``stop`` bracket the server."""

    def __init__(self, level: str, log_format: str, role: str) -> None:
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, _stderr_handler(log_format, role))
        self._level = level.upper()

    def start(self) -> None:
        root = logging.getLogger()
        root.handlers[:] = [_DeferredFormatQueueHandler(self._queue)]
        root.setLevel(self._level)
        self._listener.start()

    def stop(self) -> None:
        """Write what is queued, then hand stderr back to the calling thread."""
        self._listener.stop()
        logging.getLogger().handlers[:] = list(self._listener.handlers)


class AccessLogger(AbstractAccessLogger):
    """One line per request: id, method, route, status, latency, batch size."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        fields = {
            "request_id": response.headers.get("X-Request-Id"),
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "latency_ms": round(time * 1000, 3),
            "batch_size": int(response.headers.get("X-Batch-Size", 0)) or None,
            "remote": request.remote,
        }
        self.logger.info(
            "%s %s %d %.1fms id=%s batch=%s",
            request.method, request.path, response.status, time * 1000,
            fields["request_id"] or "-", fields["batch_size"] or "-",
            extra={FIELDS: fields},
        )
