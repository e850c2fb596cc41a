"""Concurrency 1 against one raw ``pipeline(text)`` call, two ways. On a
noisy box the drift between two separate measurements (±15% here) swamps a
2 ms difference, so each server figure is compared with a raw figure taken
just before it: single calls in pairs (raw call, then one HTTP request with
the same text), and closed-loop blocks (a block of back-to-back raw calls,
then a block of back-to-back requests). Appends a section to
bench/RESULTS.md. Loopback only.

    python bench/latency.py                 # minilm and bert-base
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import time
import http.client
import re
import shutil
import socket
import subprocess
import urllib.parse
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import MODELS, OUT, RawHelper, free_port, start_server  # noqa: E402

PAIRS = {"minilm": 200, "bert-base": 120, "minilm-embed": 200}
# (blocks, calls per block) for the closed-loop comparison.
BLOCKS = {"minilm": (40, 20), "bert-base": (40, 10), "minilm-embed": (40, 20)}


class KeepAliveClient:
    """One persistent HTTP/1.1 connection, as any pooled client (requests,
    httpx, aiohttp) keeps: the TCP handshake is not part of a request.

    Lean on purpose, like wrk or hey: it writes the request bytes and reads
    the status line, the headers up to Content-Length and the body, nothing
    more. http.client parses every header through the email package, which
    costs ~0.2-0.6 ms a response on this box: the client's time, not the
    server's, and the raw call it is compared with has no client at all.
    (`--client http.client` measures with it anyway.)"""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("loopback only")
        self.path = parts.path or "/"
        self.host = f"{parts.hostname}:{parts.port}"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call_ms(self, body: bytes) -> float:
        request = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        started = time.perf_counter()
        self.sock.sendall(request)
        status, length, received = self._read_head()
        while len(received) < length:
            chunk = self.sock.recv(max(65536, length - len(received)))
            if not chunk:
                raise RuntimeError("the server closed the connection")
            received += chunk
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"server answered {status}")
        return elapsed

    def _read_head(self) -> tuple[int, int, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
        return status, length, rest

    def close(self) -> None:
        self.sock.close()


class HttpClientConnection:
    """The same, through the standard library's http.client."""

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


class WrkBlocks:
    """Closed-loop blocks through wrk (apt install wrk), a C client: its
    own CPU per request is a fraction of a Python client's, and on 2 shared
    cores the client's time lands on the same core as the server's answer
    path. wrk runs for whole seconds, so it measures blocks only (no pairs).
    The request bodies cycle through the same texts as the other clients."""

    def __init__(self, url: str, texts: list[str], script: Path) -> None:
        if urllib.parse.urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("loopback only")
        self.url = url
        bodies = ", ".join(_lua_string(json.dumps({"inputs": t})) for t in texts)
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"local bodies = {{{bodies}}}\nlocal n = 0\n"
            "request = function()\n  n = n % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[n])\nend\n"
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("P50_US %.1f\\nREQUESTS %d\\nERRORS %d\\n", latency:percentile(50), '
            "summary.requests, summary.errors.status + summary.errors.read + summary.errors.connect))\nend\n"
        )
        self.script = script

    def block_p50_ms(self, seconds: int) -> float:
        out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", str(self.script), self.url],
                             capture_output=True, text=True, check=True).stdout
        if int(re.search(r"^ERRORS (\d+)", out, re.M).group(1)):
            raise RuntimeError(f"wrk saw errors:\n{out}")
        return float(re.search(r"^P50_US ([\d.]+)", out, re.M).group(1)) / 1000


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


CLIENTS = {"lean": KeepAliveClient, "http.client": HttpClientConnection}
# wrk blocks: seconds per block (a whole number: wrk's -d takes no fraction).
WRK_SECONDS = {"minilm": 1, "bert-base": 2, "minilm-embed": 1}


def measure(name: str, client_kind: str) -> dict:
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
    url = f"http://127.0.0.1:{port}{spec.get('route', '/')}"
    try:
        if client_kind == "wrk":
            figures = _measure_wrk(name, WrkBlocks(url, texts, OUT / f"{name}-wrk.lua"), raw)
        else:
            figures = _measure_client(name, CLIENTS[client_kind](url), texts, raw)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        raw.close()
    return {"title": spec["title"], "client": client_kind, **figures}


def _measure_client(name: str, client: KeepAliveClient | HttpClientConnection, texts: list[str], raw: RawHelper) -> dict:
    """Pairs, then blocks, through one keep-alive connection."""
    def request_ms(i: int) -> float:
        return client.call_ms(json.dumps({"inputs": texts[i % len(texts)]}).encode())

    try:
        for i in range(5):  # warm both
            raw.ask("single 1")
            request_ms(i)
        raw_ms, server_ms = [], []
        for i in range(PAIRS[name]):
            raw_ms.append(raw.ask("single 1"))  # timed inside the raw process: the bare call
            server_ms.append(request_ms(i))
        # Closed loops, side by side: a block of back-to-back raw calls, then
        # a block of back-to-back server requests, alternating. Interleaving
        # single calls (above) makes each side run while the other's OpenMP
        # threads still spin after its last forward pass (~9 ms here), which
        # neither a concurrency-1 client nor a raw loop meets; blocks avoid
        # that and still cancel the box's drift, block against block.
        blocks, calls = BLOCKS[name]
        block_figures = _blocks(raw, blocks, calls, f"{blocks}x{calls}",
                                lambda b: statistics.median(request_ms(b * calls + j) for j in range(calls)))
    finally:
        client.close()
    differences = [s - r for s, r in zip(server_ms, raw_ms)]
    return {
        "pairs": len(differences),
        "raw_p50": statistics.median(raw_ms), "server_p50": statistics.median(server_ms),
        "p50_difference": statistics.median(server_ms) - statistics.median(raw_ms),
        "median_paired_difference": statistics.median(differences),
        "paired_ci95": median_ci95(differences),
        **block_figures,
    }


def _measure_wrk(name: str, wrk: WrkBlocks, raw: RawHelper) -> dict:
    """Blocks only: wrk runs for whole seconds."""
    wrk.block_p50_ms(1)  # warm up
    raw.ask("single 5")
    blocks, calls = BLOCKS[name]
    seconds = WRK_SECONDS[name]
    return {"pairs": 0, **_blocks(raw, blocks, calls, f"{blocks}x{seconds}s", lambda b: wrk.block_p50_ms(seconds))}


def _blocks(raw: RawHelper, blocks: int, calls: int, label: str, server_block_ms: Callable[[int], float]) -> dict:
    """``blocks`` times: the median of ``calls`` back-to-back raw calls, then
    ``server_block_ms(block)``, the server's median over a block of its own."""
    block_raw, block_server = [], []
    for b in range(blocks):
        block_raw.append(raw.ask(f"single {calls}"))
        block_server.append(server_block_ms(b))
    block_differences = [s - r for s, r in zip(block_server, block_raw)]
    return {
        "blocks": label,
        "block_raw_p50": statistics.median(block_raw), "block_server_p50": statistics.median(block_server),
        "median_block_difference": statistics.median(block_differences),
        "block_ci95": median_ci95(block_differences),
    }


def median_ci95(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap 95% interval for the median: how far this run's median
    could move by chance, to read a figure against a bar (seeded: the same
    data gives the same interval). It treats the values as independent;
    neighbouring pairs and blocks share the box's drift, so the true
    interval is wider: a lower bound on the uncertainty."""
    pick = random.Random(0)
    medians = sorted(statistics.median(pick.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(PAIRS))
    default_clients = ["lean", "http.client"] + (["wrk"] if shutil.which("wrk") else [])
    p.add_argument("--clients", nargs="+", default=default_clients, choices=sorted([*CLIENTS, "wrk"]))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    results = []
    for name in args.models:
        for client_kind in args.clients:
            result = measure(name, client_kind)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.no_write:
        return
    lines = [
        "",
        f"## Concurrency 1 (`python bench/latency.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        "Server flags are the defaults; one keep-alive connection (HTTP included); raw calls are timed inside the raw "
        "process. *Pairs*: each server request follows one raw `pipeline(text)` call, so each side runs while the other's "
        "OpenMP threads still spin after its forward pass. *Blocks*: closed loops side by side, a block of back-to-back "
        "raw calls then a block of back-to-back server requests, alternating; the difference of the two blocks' medians, "
        "median over blocks. Clients: `lean` writes the request and reads status, headers and Content-Length body, "
        "like wrk (the server's latency); `http.client` adds the standard library's header parsing; `wrk` (blocks only: it "
        "runs for whole seconds) is the C client itself, whose own CPU per request is smallest. In brackets: a "
        "bootstrap 95% interval of each median difference (how far it could move by chance within this run; it treats "
        "pairs and blocks as independent, which neighbours sharing the box's drift are not, so it is a lower bound).",
        "",
        "| model | client | pairs: raw p50 ms | server p50 ms | median paired difference ms "
        "| blocks | blocks: raw p50 ms | server p50 ms | median block difference ms |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        pairs = ("– | – | –" if not r["pairs"] else
                 f"{r['raw_p50']:.2f} | {r['server_p50']:.2f} | "
                 f"**{r['median_paired_difference']:+.2f}** [{r['paired_ci95'][0]:+.2f}, {r['paired_ci95'][1]:+.2f}]")
        lines.append(f"| {r['title']} | {r['client']} | {pairs} | "
                     f"{r['blocks']} | {r['block_raw_p50']:.2f} | {r['block_server_p50']:.2f} | "
                     f"**{r['median_block_difference']:+.2f}** [{r['block_ci95'][0]:+.2f}, {r['block_ci95'][1]:+.2f}] |")
    with (HERE / "RESULTS.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("appended to bench/RESULTS.md")


if __name__ == "__main__":
    main()
