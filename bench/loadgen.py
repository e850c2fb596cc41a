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
import statistics
import time

import aiohttp

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


async def run(url: str, bodies: list[bytes], content_type: str, concurrency: int,
              duration: float, warmup: float, max_requests: int, count_all: bool = False) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: list[int] = []
    answered_at: list[float] = []
    sent = 0
    no_answer = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def client(k: int) -> None:
            nonlocal sent, no_answer
            i = k
            while time.monotonic() < stop_at and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.monotonic()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": content_type}) as resp:
                        await resp.read()
                        status = resp.status
                        batch = resp.headers.get("X-Batch-Size")
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    no_answer += 1  # connection refused or dropped, or no reply in time
                    continue
                t1 = time.monotonic()
                # Count what completes inside the window, wherever it began:
                # requiring the start inside too would undercount long latencies.
                if count_all or measure_from <= t1 <= stop_at:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        answered_at.append(t1)
                    if batch:
                        batch_sizes.append(int(batch))

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
    result = asyncio.run(run(args.url, bodies, args.content_type, args.concurrency,
                             args.duration, args.warmup, args.max_requests, args.all))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
