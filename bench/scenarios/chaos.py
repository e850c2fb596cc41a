"""Chaos run: requests at concurrency C while the serving worker is SIGKILLed
every few seconds. Counts how many got 200, how many 503, and how many got
no answer or a wrong one (those two must be 0: the scenario exits 1
otherwise); each answer is checked against its own request. Reports each
request's latency (p50, p99) and the share of 503s. Loopback only, bounded
in count and time.

A tiny random fill-mask model by default (it restarts fast); ``--model
minilm`` runs the embedded all-MiniLM-L6-v2 (one worker, the deployment the
restart work is about; answers checked against the server's own embedding
of each text, taken before the first kill). ``--spare-workers 1`` keeps a
warm spare; ``--server-root`` runs another checkout (before/after).

    python -m bench chaos                        # 10,000 requests: ~1-3 min
    python -m bench chaos --model minilm --concurrency 16 --time-limit 60 --requests 1000000
    python -m bench chaos --model minilm --concurrency 16 --time-limit 60 --requests 1000000 --spare-workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections.abc import Callable

from bench.harness import MODELS, OUT, start_inferserve
from bench.loadgen import percentile
from bench.machine import serving_worker_pids, worker_pids

SUMMARY = "requests at concurrency 64 while the worker is SIGKILLed every few seconds (~2 min)"
# Varied sentences (MiniLM's answers are told apart by which reference embedding each is nearest).
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
    "How do I reset my password?", "Inference servers batch requests to keep the accelerator busy.",
    "In 1969, Apollo 11 landed two astronauts on the Moon.", "I absolutely loved this film.",
    "The contract terminates unless renewed in writing.", "What is the boiling point of water?",
    "Mitochondria are the powerhouse of the cell.", "Le chat dort sur le canapé.",
    "Prices rose 3.2% year over year.", "Why is the sky blue?", "Please summarise the meeting notes.",
    "A recipe for bread needs flour, water, salt and yeast.", "The football match ended in a draw.",
    "Quantum computers use qubits instead of bits.",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--kill-every", type=float, default=5.0, help="seconds between worker SIGKILLs")
    p.add_argument("--time-limit", type=float, default=300.0, help="stop sending after this many seconds")
    p.add_argument("--model", choices=("tiny-fill-mask", "minilm"), default="tiny-fill-mask")
    p.add_argument("--spare-workers", type=int, default=0, help="the server's --spare-workers (default 0)")
    p.add_argument("--label", default="", help="names the run in its section (e.g. before, after)")


def run(args: argparse.Namespace) -> dict:
    model = MODELS[args.model]
    extra = ["--max-batch-size", "32"] + (["--spare-workers", str(args.spare_workers)] if args.spare_workers else [])
    log = OUT / "chaos-server.log"
    with start_inferserve(model.path(), model.task, extra, log, args.server_root) as server:
        def serving() -> list[int]:  # the workers taking traffic (not a spare)
            return serving_worker_pids(log.read_text(errors="replace")) or worker_pids(server.pid)

        result = asyncio.run(chaos(server.url("/"), serving, args.requests, args.concurrency,
                                   args.kill_every, args.time_limit, args.model == "minilm"))
    print(f"sent {result['sent']}: 200={result['200']} 503={result['503']} ({result['share_503']:.1%}) "
          f"other={result['other_status']} no_answer={result['no_answer']} wrong={result['wrong_answer']} "
          f"p50={result['p50_ms']:.0f} ms p99={result['p99_ms']:.0f} ms "
          f"(worker killed {result['worker_kills']} times in {result['seconds']}s)", flush=True)
    result["failed"] = bool(result["no_answer"] or result["wrong_answer"])
    return result


async def chaos(url: str, serving: Callable[[], list[int]], total: int, concurrency: int, kill_every: float,
                time_limit: float, embeddings: bool = False) -> dict:
    import aiohttp

    counts = {"200": 0, "503": 0, "other_status": 0, "no_answer": 0, "wrong_answer": 0}
    latencies: list[float] = []
    kills = 0
    next_id = 0
    timeout = aiohttp.ClientTimeout(total=35)

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        check = await _embedding_check(session, url) if embeddings else _fill_mask_check
        stop_at = time.monotonic() + time_limit

        async def client() -> None:
            nonlocal next_id
            while next_id < total and time.monotonic() < stop_at:
                i = next_id
                next_id += 1
                text = SENTENCES[i % len(SENTENCES)] if embeddings else f"chaos request {i} [MASK]"
                started = time.monotonic()
                try:
                    async with session.post(url, json={"inputs": text}) as resp:
                        body = await resp.read()
                        status = resp.status
                        retry_after = float(resp.headers.get("Retry-After", "1"))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    counts["no_answer"] += 1
                    continue
                latencies.append(time.monotonic() - started)
                if status == 200:
                    counts["200" if check(i, json.loads(body)) else "wrong_answer"] += 1
                elif status == 503:
                    counts["503"] += 1
                    await asyncio.sleep(retry_after)  # a polite client honours Retry-After
                else:
                    counts["other_status"] += 1

        async def killer() -> None:
            nonlocal kills
            while next_id < total and time.monotonic() < stop_at:
                await asyncio.sleep(kill_every)
                for pid in serving():
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass

        started = time.monotonic()
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(client() for _ in range(concurrency)))
        kill_task.cancel()
    answered = max(1, len(latencies))
    counts.update(sent=next_id, worker_kills=kills, seconds=round(time.monotonic() - started, 1),
                  share_503=counts["503"] / answered,
                  p50_ms=percentile(latencies, 0.50) * 1000 if latencies else 0.0,
                  p99_ms=percentile(latencies, 0.99) * 1000 if latencies else 0.0)
    return counts


def _fill_mask_check(i: int, predictions: list) -> bool:
    prefix = f"chaos request {i}"
    return bool(predictions) and all(p["sequence"].startswith(prefix) for p in predictions)


async def _embedding_check(session, url: str) -> Callable[[int, list], bool]:
    """Each text's embedding as the server gives it before any kill; an answer
    is right when the nearest of those is its own text's (cosine above 0.99)."""
    import numpy as np

    references = []
    for text in SENTENCES:
        async with session.post(url, json={"inputs": text}) as resp:
            resp.raise_for_status()
            references.append(np.asarray(json.loads(await resp.read()), dtype=np.float64).reshape(-1))
    table = np.stack([r / np.linalg.norm(r) for r in references])

    def check(i: int, answer: list) -> bool:
        vector = np.asarray(answer, dtype=np.float64).reshape(-1)
        cosines = table @ (vector / np.linalg.norm(vector))
        own = i % len(SENTENCES)
        return int(cosines.argmax()) == own and cosines[own] > 0.99

    return check
