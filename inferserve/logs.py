"""Logging set-up shared by the front-end and the worker: text or JSON lines."""

from __future__ import annotations

import logging
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
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role} %(process)d] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


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
