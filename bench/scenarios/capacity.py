"""What caps the server at high concurrency: the load generator, the
front-end or the worker? One server (MiniLM; float16 on a GPU), load from 1,
2 and 4 bench.loadgen processes at once, on `/embed` and `/`; requests/s
summed, and each server process's CPU as a share of one core over the
window. If more load generators add no requests/s, they are not the cap; a
process near 1.0 core is. Loopback only.

    python -m bench capacity                     # 6 measurements of 6 s: ~2 min
    python -m bench capacity --device cuda:0
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from bench.harness import MODELS, OUT, finish, load_command, spawn, start_inferserve, write_bodies
from bench.machine import cpu_seconds, worker_pids

SUMMARY = "which process caps the server: 1, 2 and 4 load generators at once, each process's CPU (~2 min)"
LOADS = ((1, 64), (2, 64), (4, 32))  # (load generator processes, concurrency of each)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="the server's device (float16 on cuda)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured window per load")
    p.add_argument("--server-args", default="", help="extra inferserve flags, in one string")


def run(args: argparse.Namespace) -> dict:
    extra = ["--device", args.device] + (["--dtype", "float16"] if args.device.startswith("cuda") else [])
    extra += shlex.split(args.server_args)
    model = MODELS["minilm"]
    bodies = write_bodies(model.name, model.texts())
    measurements = []
    with start_inferserve(model.path(), model.task, extra, OUT / "capacity-server.log", args.server_root) as server:
        pids = [server.pid, *worker_pids(server.pid)]
        for route in ("/embed", "/"):
            for processes, concurrency in LOADS:
                measurements.append(measure(server.url(route), route, bodies, processes, concurrency,
                                             args.seconds, pids))
                print(measurements[-1], flush=True)
    return {"device": args.device, "server_args": extra, "measurements": measurements}


def measure(url: str, route: str, bodies: Path, processes: int, concurrency: int, seconds: float,
            server_pids: list[int]) -> dict:
    loads = [spawn(load_command(url, bodies, concurrency, seconds, warmup=1)) for _ in range(processes)]
    time.sleep(1.0)  # their warm-up
    before = {pid: cpu_seconds(pid) for pid in server_pids}
    started = time.monotonic()
    time.sleep(seconds - 0.5)
    span = time.monotonic() - started
    shares = [round((cpu_seconds(pid) - before[pid]) / span, 2) for pid in server_pids]
    outs = [finish(p) for p in loads]
    return {
        "route": route, "loadgens": processes, "concurrency_each": concurrency,
        "rps_total": round(sum(o["window_rps"] for o in outs), 1),
        "p50_ms": [round(o["p50_ms"], 2) for o in outs], "p99_ms": [round(o["p99_ms"], 2) for o in outs],
        "mean_batch": [round(o["mean_batch"], 1) for o in outs],
        "non_200": sum(v for o in outs for k, v in o["statuses"].items() if str(k) != "200"),
        "front_end_core_share": shares[0], "worker_process_core_shares": shares[1:],
    }
