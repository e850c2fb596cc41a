"""The front-end's off-loop log writer: nothing lost, written while running."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from inferserve.logs import OffLoopLogging


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
