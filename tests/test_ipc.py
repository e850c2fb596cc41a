"""The pipe protocol on its own: framing, large messages, non-blocking reads, EOF."""

from __future__ import annotations

import asyncio
import threading

import multiprocess

from inferserve.ipc import (
    BatchReport,
    Channel,
    InferResult,
    LoopReader,
    Outcome,
    open_pipes,
    _unwritten,
)


def channels() -> tuple[Channel, Channel]:
    front_ends, worker_ends = open_pipes(multiprocess.get_context("spawn"))
    return Channel(front_ends), Channel(worker_ends)


def test_messages_arrive_whole_and_in_order_both_ways() -> None:
    front, worker = channels()
    try:
        # 3 MiB: more than the pipe holds, so the writer blocks until read.
        big = InferResult(1, Outcome.OK, body=bytes(range(256)) * (3 * 4096))
        sender = threading.Thread(target=lambda: [worker.send(big), worker.send(BatchReport(1, 7, 2.5))])
        sender.start()
        assert front.recv() == big
        assert front.recv() == BatchReport(1, 7, 2.5)
        sender.join()
        front.send(BatchReport(2, 3, 1.0))
        assert worker.recv() == BatchReport(2, 3, 1.0)
        # Many frames arrive in one read: recv hands them out one at a time, in order.
        for i in range(50):
            front.send(BatchReport(i, i, float(i)))
        assert [worker.recv() for _ in range(50)] == [BatchReport(i, i, float(i)) for i in range(50)]
    finally:
        front.close()
        worker.close()


def test_read_available_returns_only_complete_frames_and_sees_eof() -> None:
    front, worker = channels()
    front.set_nonblocking_reads()
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
