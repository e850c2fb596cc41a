"""Concurrency 1, paired: one raw ``pipeline(text)`` call, then one HTTP
request to the server with the same text, N times over. On a noisy box the
drift between two separate measurements (±15% here) swamps a 2 ms
difference; pairing each server call with a raw call made just before it
cancels the drift. Appends a section to bench/RESULTS.md. Loopback only.

    python bench/latency.py                 # minilm and bert-base
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
import http.client
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import MODELS, OUT, RawHelper, free_port, start_server  # noqa: E402

PAIRS = {"minilm": 200, "bert-base": 120, "minilm-embed": 200}


class KeepAliveClient:
    """One persistent HTTP/1.1 connection, as any pooled client (requests,
    httpx, aiohttp) keeps: the TCP handshake is not part of a request."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.path = parts.path or "/"
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def call_ms(self, body: bytes) -> float:
        started = time.perf_counter()
        self.connection.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"server answered {response.status}")
        return elapsed

    def close(self) -> None:
        self.connection.close()


def measure(name: str) -> dict:
    spec = MODELS[name]
    model = spec["path"]()
    texts = [spec["text"].format(i=i) for i in range(256)]
    texts_file = OUT / f"{name}-texts.json"
    texts_file.write_text(json.dumps(texts))
    raw_cmd = [sys.executable, str(HERE / "raw_limit.py"), "--model", model, "--task", spec["task"],
               "--texts", str(texts_file), "--mode", spec.get("raw_mode", "pipeline")]
    if spec["build"]:
        raw_cmd.append("--build-bert-base")
    raw = RawHelper(raw_cmd)
    port = free_port()
    server = start_server(model, spec["task"], port, [], OUT / f"{name}-latency-server.log")
    client = KeepAliveClient(f"http://127.0.0.1:{port}{spec.get('route', '/')}")
    try:
        for text in texts[:5]:  # warm both
            raw.ask("single 1")
            client.call_ms(json.dumps({"inputs": text}).encode())
        raw_ms, server_ms = [], []
        for i in range(PAIRS[name]):
            raw_ms.append(raw.ask("single 1"))  # timed inside the raw process: the bare call
            server_ms.append(client.call_ms(json.dumps({"inputs": texts[i % len(texts)]}).encode()))
    finally:
        client.close()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        raw.close()
    differences = [s - r for s, r in zip(server_ms, raw_ms)]
    return {
        "title": spec["title"], "pairs": len(differences),
        "raw_p50": statistics.median(raw_ms), "server_p50": statistics.median(server_ms),
        "p50_difference": statistics.median(server_ms) - statistics.median(raw_ms),
        "median_paired_difference": statistics.median(differences),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(PAIRS))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    results = []
    for name in args.models:
        result = measure(name)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.no_write:
        return
    lines = [
        "",
        "## Concurrency 1, paired (`python bench/latency.py`)",
        "",
        "Each server request (a keep-alive `http.client` connection, HTTP included) follows one raw `pipeline(text)` call timed inside "
        "the raw process; server flags are the defaults.",
        "",
        "| model | pairs | raw call p50 ms | server p50 ms | p50 − raw p50 ms | median paired difference ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['title']} | {r['pairs']} | {r['raw_p50']:.2f} | {r['server_p50']:.2f} | "
                     f"{r['p50_difference']:+.2f} | **{r['median_paired_difference']:+.2f}** |")
    with (HERE / "RESULTS.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("appended to bench/RESULTS.md")


if __name__ == "__main__":
    main()
