"""Closed-loop HTTP load generator: C clients, each sending its next request
as soon as its last one is answered, for a fixed time. Runs in its own process
(one event loop, one core at most) and prints one JSON line of results.

Loopback only: the target must be 127.0.0.1 or localhost.

    python -m bench.loadgen --url http://127.0.0.1:8000/ --bodies bodies.json --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time

from bench.harness import require_loopback


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Answers closer together than this belong to one burst (one batch's answers).
BURST_GAP_S = 0.02


def whole_burst_rate(answered_at: list[float], fallback: float, window: float) -> float:
    """Answers per second, counted between the ends of whole bursts.

    A batching server answers in bursts (a batch's answers together); a
    fixed window cuts a burst at each end, which moves the count by up to a
    batch: for bert-base (batches of 32 taking ~1.2 s) one batch more or less
    in an 18 s window is +-7%. Counting the answers between the end of the
    first burst and the end of the last complete one (the one before the
    burst the window may have cut) measures whole batch periods, as the raw
    limit times whole batches. For steady traffic (no bursts) any two
    answers bound whole periods, so this is the same rate; with fewer than
    three bursts the window's count is used, and so it is when the whole
    bursts span under half the window: steady traffic with a few stalls
    over the gap would otherwise be measured between two stalls alone (an
    H100 run at concurrency 1: 52.7/s counted so, with a 4 ms p50).
    """
    times = sorted(answered_at)
    ends = [i for i in range(len(times) - 1) if times[i + 1] - times[i] > BURST_GAP_S]
    if len(ends) < 2:
        return fallback
    first, last = ends[0], ends[-1]  # the burst after `last` may be cut by the window
    span = times[last] - times[first]
    return (last - first) / span if span >= window / 2 else fallback


class Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of a closed loop: it writes a
    request, reads its answer, then writes the next.

    Lean on purpose, as wrk is: the request bytes are built once, and an
    answer is read as far as its status, its Content-Length (or chunks) and
    the X-Batch-Size header. On this 2-core box the load generator shares
    the cores with the server it measures; aiohttp's client spent ~0.2 ms of
    CPU a request (0.12 of the 2 cores at 600 requests/s), which the server
    then did not have, and a remote client would not take."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def ask(self, request: bytes) -> asyncio.Future:
        self.answer = self.loop.create_future()
        self.transport.write(request)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answer is None or self.answer.done():
            return
        parsed = parse_answer(self.buffer)
        if parsed is not None:
            status, batch, close, used = parsed
            del self.buffer[:used]
            self.answer.set_result((status, batch, close))

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("the server closed the connection"))


def parse_answer(buffer: bytearray) -> tuple[int, str | None, bool, int] | None:
    """(status, X-Batch-Size, whether the server closes, bytes used) of the
    whole answer at the buffer's start; None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    close = headers.get("connection", "").lower() == "close"
    at = end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
            at = line_end + 2 + size + 2
            if at > len(buffer):
                return None
            if size == 0:
                return status, headers.get("x-batch-size"), close, at
    at += int(headers.get("content-length", "0"))
    return (status, headers.get("x-batch-size"), close, at) if at <= len(buffer) else None


async def run(url: str, bodies: list[bytes], content_type: str, concurrency: int,
              duration: float, warmup: float, max_requests: int, count_all: bool = False) -> dict:
    parts = require_loopback(url)
    host, port = parts.hostname, parts.port or 80
    target = parts.path or "/"
    requests = [(f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: list[int] = []
    answered_at: list[float] = []
    sent = 0
    no_answer = 0
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def connect() -> Exchange | None:
        try:
            _, exchange = await asyncio.wait_for(
                loop.create_connection(lambda: Exchange(loop), host, port), 10)
        except (TimeoutError, OSError):
            return None
        exchange.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return exchange

    async def client(k: int) -> None:
        nonlocal sent, no_answer
        i = k
        exchange = None
        while time.monotonic() < stop_at and sent < max_requests:
            if exchange is None or exchange.transport is None:
                exchange = await connect()
                if exchange is None:
                    no_answer += 1  # connection refused
                    await asyncio.sleep(0.01)
                    continue
            sent += 1
            request = requests[i % len(requests)]
            i += concurrency
            t0 = time.monotonic()
            try:
                status, batch, close = await asyncio.wait_for(exchange.ask(request), 60)
            except (TimeoutError, ConnectionError):
                no_answer += 1  # dropped, or no reply in time
                if exchange.transport is not None:
                    exchange.transport.close()
                exchange = None
                continue
            t1 = time.monotonic()
            if close:
                exchange.transport.close()
                exchange = None
            # Count what completes inside the window, wherever it began:
            # requiring the start inside too would undercount long latencies.
            if count_all or measure_from <= t1 <= stop_at:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    answered_at.append(t1)
                if batch:
                    batch_sizes.append(int(batch))
        if exchange is not None and exchange.transport is not None:
            exchange.transport.close()

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "sent": sent,
        "no_answer": no_answer,
        "requests": len(latencies),
        "ok": ok,
        "statuses": statuses,
        "rps": whole_burst_rate(answered_at, fallback=ok / duration, window=duration),
        "window_rps": ok / duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_batch": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
    }


def _runner() -> asyncio.Runner:
    """uvloop where installed (it is the server's own dependency): the lean
    client's per-request CPU is then mostly the system calls."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--bodies", required=True, help="JSON file: list of request body strings")
    p.add_argument("--content-type", default="application/json")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--all", action="store_true", help="count every answer, not only those in the window")
    args = p.parse_args()
    require_loopback(args.url)
    with open(args.bodies) as f:
        bodies = [b.encode() for b in json.load(f)]
    with _runner() as runner:
        result = runner.run(run(args.url, bodies, args.content_type, args.concurrency,
                                args.duration, args.warmup, args.max_requests, args.all))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
