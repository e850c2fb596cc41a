"""inferserve beside the servers users would otherwise pick, one run, same
model (MiniLM feature-extraction), same load generator, same batch settings
(max batch 32, 5 ms batch timeout). Writes bench/PEERS.md. Loopback only.

Install the peers first (bench only, not the server's install):
    pip install litserve uvicorn starlette
    python bench/peers.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import OUT, ROOT, free_port, json_line, minilm_path  # noqa: E402

MAX_BATCH, TIMEOUT_S = 32, 0.005


def servers(model: str, task: str) -> dict[str, tuple[list[str], str, str]]:
    """name -> (command with {port}, inference path, readiness path)."""
    peer = lambda script: [sys.executable, str(HERE / "peers" / script), model, task, "{port}",  # noqa: E731
                           str(MAX_BATCH), str(TIMEOUT_S)]
    ours = [sys.executable, "-m", "inferserve", "--model", model, "--task", task, "--host", "127.0.0.1",
            "--port", "{port}", "--max-batch-size", str(MAX_BATCH), "--max-batch-delay-ms", str(TIMEOUT_S * 1000)]
    return {
        "inferserve (1 worker)": (ours, "/", "/ready"),
        "inferserve --workers 2": (ours + ["--workers", "2"], "/", "/ready"),
        "Starlette + asyncio-queue batching": (peer("starlette_server.py"), "/predict", "/health"),
        "LitServe": (peer("litserve_server.py"), "/predict", "/health"),
    }


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model, task = minilm_path(), "feature-extraction"
    bodies = OUT / "peers-bodies.json"
    bodies.write_text(json.dumps([json.dumps({"inputs": f"the quick brown fox number {i} jumps over the lazy dog"})
                                  for i in range(256)]))
    results = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for name, (command, path, ready) in servers(model, task).items():
        port = free_port()
        log = (OUT / f"peer-{name.split()[0].lower()}.log").open("wb")
        proc = subprocess.Popen([c.replace("{port}", str(port)) for c in command], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}{ready}", proc)
            if path == "/":
                time.sleep(3)  # let a second worker finish loading too
            results[name] = json_line([sys.executable, str(HERE / "loadgen.py"), "--url",
                                       f"http://127.0.0.1:{port}{path}", "--bodies", str(bodies),
                                       "--concurrency", str(args.concurrency), "--duration", str(args.seconds),
                                       "--warmup", "2"])
            print(f"{name}: {results[name]}", flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    base = results["Starlette + asyncio-queue batching"]["rps"]
    lit = results["LitServe"]["rps"]
    lines = [
        "# inferserve beside its peers",
        "",
        f"`python bench/peers.py` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, no GPU: all-MiniLM-L6-v2 "
        f"feature-extraction, closed-loop load at concurrency {args.concurrency} for {args.seconds:g} s (after 2 s "
        f"warm-up) from bench/loadgen.py in its own process; every server batches at most {MAX_BATCH} with a "
        f"{TIMEOUT_S * 1000:g} ms batch timeout, servers run one after another in the same run. The peers call "
        "`pipeline(texts, batch_size=n)`, whose feature-extraction outputs are padded to the batch's longest input "
        "(slightly larger responses than inferserve's unpadded, per-input ones).",
        "",
        "| server | requests/s | vs Starlette | vs LitServe | p50 ms | p99 ms | non-200 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        bad = sum(v for k, v in r["statuses"].items() if k != "200") + r.get("no_answer", 0)
        lines.append(f"| {name} | {r['rps']:.1f} | {r['rps'] / base:.2f}x | {r['rps'] / lit:.2f}x | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {bad} |")
    (HERE / "PEERS.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'PEERS.md'}")


if __name__ == "__main__":
    main()
