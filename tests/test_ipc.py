"""The pipe protocol on its own: framing, large messages, non-blocking reads, EOF."""

from __future__ import annotations

import asyncio
import threading
import time

import multiprocess
import pytest

from inferserve.common.transport import Channel, _unwritten, open_pipes
from inferserve.frontend.pipe_io import LoopReader, LoopWriter
from inferserve.ipc import BatchReport, InferResult, Outcome


def channels() -> tuple[Channel, Channel]:
    front_ends, worker_ends = open_pipes(multiprocess.get_context("spawn"))
    return Channel(front_ends), Channel(worker_ends)


def receive_n(channel: Channel, count: int) -> list[object]:
    """Block (via ``receive``) until ``count`` messages have arrived."""
    got: list[object] = []
    deadline = time.monotonic() + 10
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} messages arrived"
        got.extend(channel.receive(timeout=None))
    return got


def test_messages_arrive_whole_and_in_order_both_ways() -> None:
    front, worker = channels()
    try:
        # 3 MiB: more than the pipe holds, so the writer blocks until read.
        big = InferResult(1, Outcome.OK, body=bytes(range(256)) * (3 * 4096))
        small = InferResult(2, Outcome.OK, body=b'{"a": 1}', batch=BatchReport(1, 7, 2.5))  # body inside the pickle
        empty = InferResult(3, Outcome.INVALID_INPUT, message="bad input")
        sent = [big, BatchReport(1, 7, 2.5), small, empty, big]
        sender = threading.Thread(target=lambda: [worker.send(m) for m in sent])
        sender.start()
        assert receive_n(front, len(sent)) == sent
        sender.join()
        front.send(BatchReport(2, 3, 1.0))
        assert worker.receive(timeout=None) == [BatchReport(2, 3, 1.0)]
        # Many frames arrive in one read, all handed out, in order.
        for i in range(50):
            front.send(BatchReport(i, i, float(i)))
        assert receive_n(worker, 50) == [BatchReport(i, i, float(i)) for i in range(50)]
    finally:
        front.close()
        worker.close()


def test_read_available_returns_only_complete_frames_and_sees_eof() -> None:
    front, worker = channels()
    assert front.read_available() == ([], False)  # nothing yet: no blocking
    sent = [InferResult(i, Outcome.OK, body=b"x" * (i * 100_000)) for i in range(1, 6)]
    sender = threading.Thread(target=lambda: [worker.send(m) for m in sent])
    sender.start()
    received: list[object] = []
    while len(received) < len(sent):
        messages, closed = front.read_available()
        assert not closed
        received.extend(messages)
    sender.join()
    assert received == sent
    worker.close()
    assert front.read_available() == ([], True)
    front.close()


def test_send_after_close_fails_instead_of_writing_elsewhere() -> None:
    front, worker = channels()
    front.close()
    front.close()  # idempotent
    try:
        front.send(BatchReport(1, 1, 1.0))
    except OSError:
        pass
    else:
        raise AssertionError("send on a closed channel must fail")
    worker.close()


def test_unwritten_resumes_a_partial_write_at_the_right_byte() -> None:
    frame = [b"head", b"payload"]
    assert b"".join(bytes(p) for p in _unwritten(frame, 2)) == b"adpayload"
    assert b"".join(bytes(p) for p in _unwritten(frame, 6)) == b"yload"


def test_loop_reader_delivers_each_message_then_reports_closing_once() -> None:
    async def scenario() -> tuple[list[object], int]:
        front, worker = channels()
        loop = asyncio.get_running_loop()
        got: list[object] = []
        closings = 0
        closed = loop.create_future()

        def on_closed() -> None:
            nonlocal closings
            closings += 1
            closed.set_result(None)

        reader = LoopReader(loop, front, got.append, on_closed)
        reader.start()
        for i in range(20):
            worker.send(BatchReport(i, i, float(i)))
        worker.send(InferResult(99, Outcome.OK, body=b"y" * 500_000))
        worker.close()
        await asyncio.wait_for(closed, 10)
        await asyncio.sleep(0.05)  # a second "closed" would show up here
        front.close()
        return got, closings

    got, closings = asyncio.run(scenario())
    assert got[:20] == [BatchReport(i, i, float(i)) for i in range(20)]
    assert got[20] == InferResult(99, Outcome.OK, body=b"y" * 500_000)
    assert closings == 1


def test_receive_waits_for_its_timeout_then_for_a_message_and_sees_eof() -> None:
    front, worker = channels()
    started = time.monotonic()
    assert worker.receive(timeout=0.05) == []  # nothing came: back after the timeout
    assert 0.05 <= time.monotonic() - started < 1.0
    assert worker.receive(timeout=0) == [] and not worker.readable_now()
    threading.Timer(0.1, lambda: front.send(BatchReport(1, 1, 1.0))).start()
    started = time.monotonic()
    assert worker.receive(timeout=None) == [BatchReport(1, 1, 1.0)]  # woken by the message
    assert 0.05 <= time.monotonic() - started < 1.0
    front.send(BatchReport(2, 2, 2.0))
    front.close()
    assert worker.readable_now()
    assert worker.receive(timeout=None) == [BatchReport(2, 2, 2.0)]  # what came before the end
    with pytest.raises(EOFError):
        worker.receive(timeout=None)
    worker.close()


def test_loop_writer_never_blocks_and_delivers_in_order_once_the_pipe_drains() -> None:
    """While the worker runs a batch nobody reads its pipe: the front-end's
    sends must queue, not block the event loop, and arrive whole and in order."""
    big = [InferResult(i, Outcome.OK, body=bytes([i]) * 700_000) for i in range(6)]  # 4 MiB > the 1 MiB pipe

    async def scenario() -> tuple[float, int, list[object]]:
        front, worker = channels()
        loop = asyncio.get_running_loop()
        writer = LoopWriter(loop, front)
        started = time.monotonic()
        for message in big:
            writer.send(message)  # type: ignore[arg-type]
        send_seconds = time.monotonic() - started
        backlog = writer.backlog
        got = await loop.run_in_executor(None, receive_n, worker, len(big))
        for _ in range(100):  # the loop writes the rest as the pipe drains
            if not writer.backlog:
                break
            await asyncio.sleep(0.01)
        left = writer.backlog
        writer.stop()
        front.close()
        worker.close()
        return send_seconds, backlog, got + [left]

    send_seconds, backlog, got = asyncio.run(scenario())
    assert send_seconds < 0.5 and backlog > 0  # queued, not blocked on the full pipe
    assert got[:-1] == big and got[-1] == 0


def test_loop_writer_fails_fast_on_a_closed_channel() -> None:
    async def scenario() -> None:
        front, worker = channels()
        writer = LoopWriter(asyncio.get_running_loop(), front)
        front.close()
        with pytest.raises(OSError):
            writer.send(BatchReport(1, 1, 1.0))  # type: ignore[arg-type]
        worker.close()

    asyncio.run(scenario())
