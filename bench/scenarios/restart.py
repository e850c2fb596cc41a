"""What a dead worker costs: SIGKILL of the serving worker -> the first request
answered 200 again, one worker on all-MiniLM-L6-v2 (the embedded default).

Each round waits until every worker (the spares too) is ready, kills the
serving worker, then sends one small request after another (each retried
at once after a 503) until one is answered 200: the time from the kill to
that answer is the round's figure (without a spare, also the CPU time the
replacement used until then, which a busy machine disturbs less). Also reports the cold start (launch ->
/ready), and the resident memory of the preloaded helper the workers fork
from and of a worker. Loopback only.

    python -m bench restart                        # 5 kills, no spare
    python -m bench restart --spare-workers 1
    python -m bench restart --server-root /path/to/before --label before
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.request

from bench.harness import MODELS, OUT, start_inferserve
from bench.machine import cpu_seconds, rss_mb, serving_worker_pids, worker_pids

SUMMARY = "SIGKILL of the serving worker -> answered again, one MiniLM worker (~1 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--spare-workers", type=int, default=0, help="the server's --spare-workers (default 0)")
    p.add_argument("--label", default="", help="names the run in its section (e.g. before, after)")


def run(args: argparse.Namespace) -> dict:
    model = MODELS["minilm"]
    log = OUT / "restart-server.log"
    extra = ["--spare-workers", str(args.spare_workers)] if args.spare_workers else []
    launched = time.monotonic()
    with start_inferserve(model.path(), model.task, extra, log, args.server_root) as server:
        cold_start_s = time.monotonic() - launched
        workers = 1 + args.spare_workers
        rounds, cpu = [], []
        for _ in range(args.kills):
            _wait(lambda: log.read_text(errors="replace").count(" ready: model") >= workers + len(rounds)
                  and len(worker_pids(server.pid)) == workers, what="every worker ready")
            victims = serving_worker_pids(log.read_text(errors="replace"))
            killed_at = time.monotonic()
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            rounds.append(round(_first_answer(server.url("/")) - killed_at, 3))
            if not args.spare_workers:  # the replacement's CPU time from its start to its first answer
                cpu.append(round(cpu_seconds(serving_worker_pids(log.read_text(errors="replace"))[0]), 2))
            print(f"kill {len(rounds)}: answered again after {rounds[-1]:.3f} s"
                  + (f" (the replacement used {cpu[-1]:.2f} CPU-s)" if cpu else ""), flush=True)
        helpers = subprocess.run(["pgrep", "-P", str(server.pid), "-f", "forkserver"], capture_output=True,
                                 text=True).stdout.split()
        result = {
            "cold_start_s": round(cold_start_s, 2),
            "kill_to_answer_s": rounds,
            "median_s": statistics.median(rounds),
            "max_s": max(rounds),
            "replacement_cpu_s": cpu,  # less sensitive to a busy machine than the wall time
            "helper_rss_mb": round(rss_mb(int(helpers[0])), 1) if helpers else None,
            "worker_rss_mb": round(rss_mb(worker_pids(server.pid)[0]), 1),
        }
    print(f"cold start {result['cold_start_s']} s; kill -> answered: median {result['median_s']:.3f} s, "
          f"max {result['max_s']:.3f} s; helper RSS {result['helper_rss_mb']} MB, worker RSS "
          f"{result['worker_rss_mb']} MB", flush=True)
    return result


def _first_answer(url: str, timeout: float = 120.0) -> float:
    """When the first small request is answered 200 (requests sent one after another)."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        request = urllib.request.Request(url, data=b'{"inputs": "are you back?"}',
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if response.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, OSError):
            time.sleep(0.005)  # a 503 (no worker ready): ask again
    raise TimeoutError("no answer after the kill")


def _wait(predicate, what: str, timeout: float = 120.0) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise TimeoutError(what)
        time.sleep(0.05)
