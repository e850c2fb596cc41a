"""inferserve beside the servers users would otherwise pick, one run, same
model (MiniLM feature-extraction), same load generator, same batch settings
(max batch 32, 5 ms batch timeout): inferserve with 1 and 2 workers, a plain
Starlette server batching with an asyncio queue, and LitServe
(bench/peer_servers/). Servers run one after another; a peer whose packages
are missing is skipped. Loopback only.

Install the peers first (bench only, not the server's install):
    pip install litserve uvicorn starlette
    python -m bench peers                        # 10 s per server: ~2 min
"""

from __future__ import annotations

import argparse
import importlib.util
import time

from bench.harness import (
    MODELS, OUT, Server, free_port, load, python_module, start_inferserve, write_bodies,
)

SUMMARY = "inferserve (1 and 2 workers) vs Starlette and LitServe, same model and load (~2 min)"
MAX_BATCH, TIMEOUT_S = 32, 0.005
TEXT = "the quick brown fox number {i} jumps over the lazy dog"
PEERS = {  # name -> (module, packages it needs)
    "Starlette + asyncio-queue batching": ("bench.peer_servers.starlette_server", ("starlette", "uvicorn")),
    "LitServe": ("bench.peer_servers.litserve_server", ("litserve",)),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per server")
    p.add_argument("--concurrency", type=int, default=64)


def run(args: argparse.Namespace) -> dict:
    model = MODELS["minilm"]
    path = model.path()
    bodies = write_bodies("peers", [TEXT.format(i=i) for i in range(256)])
    ours = ["--max-batch-size", str(MAX_BATCH), "--max-batch-delay-ms", str(TIMEOUT_S * 1000)]
    results, skipped = {}, []

    def measure(name: str, server: Server, route: str) -> None:
        with server:
            server.wait_ready()
            if route == "/":
                time.sleep(3)  # let a second worker finish loading too
            results[name] = load(server.url(route), bodies, args.concurrency, args.seconds, warmup=2)
        print(f"{name}: {results[name]}", flush=True)

    for workers, name in ((1, "inferserve (1 worker)"), (2, "inferserve --workers 2")):
        extra = ours + (["--workers", str(workers)] if workers > 1 else [])
        measure(name, start_inferserve(path, model.task, extra, OUT / f"peer-inferserve-{workers}.log",
                                       args.server_root, wait=False), "/")
    for name, (module, packages) in PEERS.items():
        if not all(importlib.util.find_spec(p) for p in packages):
            print(f"{name}: skipped (pip install {' '.join(packages)})", flush=True)
            skipped.append(name)
            continue
        port = free_port()
        command = python_module(module, path, model.task, str(port), str(MAX_BATCH), str(TIMEOUT_S))
        measure(name, Server(command, port, OUT / f"peer-{module.rsplit('.', 1)[1]}.log", ready="/health",
                             stop_group=True), "/predict")
    return {"servers": results, "skipped": skipped, "max_batch": MAX_BATCH, "batch_timeout_ms": TIMEOUT_S * 1000,
            "concurrency": args.concurrency, "seconds": args.seconds, "warmup": 2}
