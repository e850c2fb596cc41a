"""What caps the server at high concurrency: the load generator, the
front-end or the worker? One server (MiniLM; float16 on a GPU), load from 1,
2 and 4 bench/loadgen.py processes at once, on `/embed` and `/`; requests/s
summed, and each server process's CPU as a share of one core over the
window. If more load generators add no requests/s, they are not the cap; a
process near 1.0 core is. Loopback only. Prints one JSON line per
measurement.

    python bench/capacity.py --device cuda:0 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from chaos import worker_pids  # noqa: E402
from run import OUT, free_port, minilm_path, model_texts, start_server, write_bodies  # noqa: E402

LOADS = ((1, 64), (2, 64), (4, 32))  # (load generator processes, concurrency of each)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(port: int, route: str, bodies: Path, processes: int, concurrency: int, seconds: float,
            server_pids: list[int]) -> dict:
    command = [sys.executable, str(HERE / "loadgen.py"), "--url", f"http://127.0.0.1:{port}{route}",
               "--bodies", str(bodies), "--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "1"]
    loads = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    time.sleep(1.0)  # their warm-up
    before = {pid: cpu_seconds(pid) for pid in server_pids}
    started = time.monotonic()
    time.sleep(seconds - 0.5)
    span = time.monotonic() - started
    shares = [round((cpu_seconds(pid) - before[pid]) / span, 2) for pid in server_pids]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in loads]
    return {
        "route": route, "loadgens": processes, "concurrency_each": concurrency,
        "rps_total": round(sum(o["window_rps"] for o in outs), 1),
        "p50_ms": [round(o["p50_ms"], 2) for o in outs], "p99_ms": [round(o["p99_ms"], 2) for o in outs],
        "mean_batch": [round(o["mean_batch"], 1) for o in outs],
        "non_200": sum(v for o in outs for k, v in o["statuses"].items() if str(k) != "200"),
        "front_end_core_share": shares[0], "worker_process_core_shares": shares[1:],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    extra = ["--device", args.device] + (["--dtype", "float16"] if args.device.startswith("cuda") else [])
    OUT.mkdir(exist_ok=True)
    bodies = write_bodies("minilm", model_texts("minilm"))
    port = free_port()
    server = start_server(minilm_path(), "feature-extraction", port, extra, OUT / "capacity-server.log")
    try:
        pids = [server.pid, *worker_pids(server.pid)]
        for route in ("/embed", "/"):
            for processes, concurrency in LOADS:
                print(json.dumps(measure(port, route, bodies, processes, concurrency, args.seconds, pids)), flush=True)
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
