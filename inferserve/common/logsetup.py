"""Logging set-up for both processes: text or JSON lines on stderr."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

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
    logging.getLogger().handlers[:] = [stderr_handler(log_format, role)]
    logging.getLogger().setLevel(level.upper())


def stderr_handler(log_format: str, role: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role} %(process)d] %(message)s"))
    return handler
