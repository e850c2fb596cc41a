"""Chaos run: N requests at concurrency C while the worker is SIGKILLed every
few seconds (a tiny random fill-mask model, so it restarts fast). Counts how
many got 200, how many 503, and how many got no answer or a wrong one
(those two must be 0: the scenario exits 1 otherwise). Each answer is
checked against its own request. Loopback only, bounded in count and time.

    python -m bench chaos                        # 10,000 requests: ~1-3 min
    python -m bench chaos --requests 2000 --kill-every 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

from bench.harness import MODELS, OUT, start_inferserve
from bench.machine import worker_pids

SUMMARY = "requests at concurrency 64 while the worker is SIGKILLed every few seconds (~2 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--kill-every", type=float, default=5.0, help="seconds between worker SIGKILLs")
    p.add_argument("--time-limit", type=float, default=300.0, help="stop sending after this many seconds")


def run(args: argparse.Namespace) -> dict:
    model = MODELS["tiny-fill-mask"]
    with start_inferserve(model.path(), model.task, ["--max-batch-size", "32"], OUT / "chaos-server.log",
                          args.server_root) as server:
        result = asyncio.run(chaos(server.url("/"), server.pid, args.requests, args.concurrency,
                                   args.kill_every, args.time_limit))
    print(f"sent {result['sent']}: 200={result['200']} 503={result['503']} other={result['other_status']} "
          f"no_answer={result['no_answer']} wrong={result['wrong_answer']} "
          f"(worker killed {result['worker_kills']} times in {result['seconds']}s)", flush=True)
    result["failed"] = bool(result["no_answer"] or result["wrong_answer"])
    return result


async def chaos(url: str, server_pid: int, total: int, concurrency: int, kill_every: float,
                time_limit: float) -> dict:
    import aiohttp

    counts = {"200": 0, "503": 0, "other_status": 0, "no_answer": 0, "wrong_answer": 0}
    kills = 0
    next_id = 0
    stop_at = time.monotonic() + time_limit
    timeout = aiohttp.ClientTimeout(total=35)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_id
        while next_id < total and time.monotonic() < stop_at:
            i = next_id
            next_id += 1
            prefix = f"chaos request {i}"
            try:
                async with session.post(url, json={"inputs": f"{prefix} [MASK]"}) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = float(resp.headers.get("Retry-After", "1"))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                counts["no_answer"] += 1
                continue
            if status == 200:
                predictions = json.loads(body)
                if all(p["sequence"].startswith(prefix) for p in predictions) and predictions:
                    counts["200"] += 1
                else:
                    counts["wrong_answer"] += 1
            elif status == 503:
                counts["503"] += 1
                await asyncio.sleep(retry_after)  # a polite client honours Retry-After
            else:
                counts["other_status"] += 1

    async def killer() -> None:
        nonlocal kills
        while next_id < total and time.monotonic() < stop_at:
            await asyncio.sleep(kill_every)
            for pid in worker_pids(server_pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        kill_task.cancel()
    counts.update(sent=next_id, worker_kills=kills, seconds=round(time.monotonic() - started, 1))
    return counts
