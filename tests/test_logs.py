"""The front-end's off-loop log writer: nothing lost, written while running."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import pytest

from inferserve.frontend.access_log import OffLoopLogging


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_every_line_from_every_thread_is_written_in_order(capsys, restore_root_logging) -> None:
    logs = OffLoopLogging("info", "text", role="server", flush_interval_s=0.01)
    logs.start()
    log = logging.getLogger("inferserve.test")

    def burst(name: str) -> None:
        for i in range(200):
            log.info("%s line %d", name, i)

    threads = [threading.Thread(target=burst, args=(f"t{k}",)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logs.stop()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 600
    for k in range(3):
        mine = [int(line.rsplit(" ", 1)[1]) for line in lines if f" t{k} line " in line]
        assert mine == list(range(200))  # none lost, each thread's lines in order


def test_lines_reach_stderr_while_the_server_runs(capsys, restore_root_logging) -> None:
    logs = OffLoopLogging("info", "text", role="server", flush_interval_s=0.05)
    logs.start()
    try:
        logging.getLogger("inferserve.test").info("first")
        time.sleep(0.5)  # several flush intervals, and no stop() yet
        assert "first" in capsys.readouterr().err
        logging.getLogger("inferserve.test").info("second")  # after the writer went idle
        time.sleep(0.5)
        assert "second" in capsys.readouterr().err
    finally:
        logs.stop()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_lines_reach_stderr_whole(log_format, capsys, restore_root_logging) -> None:
    """The access line skips the LogRecord on the event loop; what is written is unchanged."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    logs = OffLoopLogging("info", log_format, role="server", flush_interval_s=0.01)
    logs.start()
    access = logs.access_logger_class()(logging.getLogger("aiohttp.access"), "")
    response = web.Response(status=200, headers={"X-Request-Id": "req-7", "X-Batch-Size": "3"})
    before = time.time()
    access.log(make_mocked_request("POST", "/embed"), response, 0.0125)
    logs.stop()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    if log_format == "text":
        assert lines[0].endswith("INFO [server %d] POST /embed 200 12.5ms id=req-7 batch=3" % os.getpid())
        stamp = time.mktime(time.strptime(lines[0][:19], "%Y-%m-%d %H:%M:%S"))  # the request's time, local
        assert before - 1 <= stamp <= time.time()
    else:
        record = json.loads(lines[0])
        assert record["message"] == "POST /embed 200 12.5ms id=req-7 batch=3"
        assert (record["request_id"], record["status"], record["batch_size"], record["latency_ms"]) == ("req-7", 200, 3, 12.5)
        assert record["logger"] == "aiohttp.access"
        stamp = time.mktime(time.strptime(record["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone  # UTC
        assert before - 1 <= stamp <= time.time()


def test_a_filter_on_the_access_logger_still_applies(capsys, restore_root_logging) -> None:
    """An operator's filter (e.g. no /health lines) is honoured: the hand-off
    to the writer is only taken while the access logger has none."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    access_log = logging.getLogger("aiohttp.access")
    no_health = logging.Filter()
    no_health.filter = lambda record: "/health" not in record.getMessage()  # type: ignore[method-assign]
    access_log.addFilter(no_health)
    logs = OffLoopLogging("info", "text", role="server", flush_interval_s=0.01)
    logs.start()
    try:
        access = logs.access_logger_class()(access_log, "")
        for path in ("/health", "/"):
            access.log(make_mocked_request("GET", path), web.Response(status=200), 0.001)
    finally:
        logs.stop()
        access_log.removeFilter(no_health)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and " GET / 200 " in lines[0]
