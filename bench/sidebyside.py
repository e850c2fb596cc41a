"""Concurrency 1, side by side: the server's latency against one raw
``pipeline(text)`` call measured at the same time.

On a noisy box the drift between two separate measurements (the raw call
alone moves by ±15% between rounds here) swamps a 2 ms difference, so a
server figure is only ever compared with a raw figure taken just before it.
*Blocks*: a block of back-to-back raw calls (timed inside the raw process),
then a block of back-to-back requests over one keep-alive connection,
alternating; each block gives its median, and the figure is the median of
the blocks' differences, with a bootstrap interval. The one implementation
of concurrency 1 against a raw call: the throughput scenario runs a few
blocks a round, the latency scenario many in one go. Server blocks go
through wrk when it is installed (a C client: its own CPU per request is the
smallest), else through a lean Python keep-alive client. Loopback only.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import OUT, Closes, Model, RawHelper, require_loopback

CLIENTS = ("auto", "wrk", "lean")


class KeepAliveClient:
    """One persistent HTTP/1.1 connection, as any pooled client (requests,
    httpx, aiohttp) keeps: the TCP handshake is not part of a request.

    Lean on purpose, like wrk or hey: it writes the request bytes and reads
    the status line, the headers up to Content-Length and the body, nothing
    more. http.client parses every header through the email package, which
    costs ~0.2-0.6 ms a response on this box: the client's time, not the
    server's, and the raw call it is compared with has no client at all."""

    def __init__(self, url: str) -> None:
        parts = require_loopback(url)
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


class ClientBlocks(Closes):
    """Blocks of ``calls`` back-to-back requests through a Python client."""

    def __init__(self, url: str, texts: list[str], calls: int) -> None:
        self.client = KeepAliveClient(url)
        self.bodies = [json.dumps({"inputs": t}).encode() for t in texts]
        self.calls = calls
        self.label = f"KeepAliveClient, {calls} requests each"

    def call_ms(self, i: int) -> float:
        return self.client.call_ms(self.bodies[i % len(self.bodies)])

    def block_p50_ms(self, block: int) -> float:
        return statistics.median(self.call_ms(block * self.calls + j) for j in range(self.calls))

    def close(self) -> None:
        self.client.close()


class WrkBlocks(Closes):
    """Blocks through wrk (apt install wrk), a C client: its own CPU per
    request is a fraction of a Python client's, and on 2 shared cores the
    client's time lands on the same core as the server's answer path. wrk
    runs for whole seconds. The request bodies cycle through the same texts
    as the Python client's."""

    def __init__(self, url: str, texts: list[str], script: Path, seconds: int) -> None:
        require_loopback(url)
        self.url = url
        self.seconds = seconds
        self.label = f"wrk, {seconds} s each"
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

    @staticmethod
    def available() -> bool:
        return shutil.which("wrk") is not None

    def block_p50_ms(self, block: int) -> float:
        out = subprocess.run(["wrk", "-t1", "-c1", f"-d{self.seconds}s", "-s", str(self.script), self.url],
                             capture_output=True, text=True, check=True).stdout
        if int(re.search(r"^ERRORS (\d+)", out, re.M).group(1)):
            raise RuntimeError(f"wrk saw errors:\n{out}")
        if not int(re.search(r"^REQUESTS (\d+)", out, re.M).group(1)):  # its p50 would read 0
            raise RuntimeError(f"wrk finished no request in {self.seconds} s: is the box saturated?\n{out}")
        return float(re.search(r"^P50_US ([\d.]+)", out, re.M).group(1)) / 1000

    def close(self) -> None:
        pass


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def open_blocks(url: str, model: Model, texts: list[str], client: str = "auto") -> ClientBlocks | WrkBlocks:
    """The server's side of the blocks: wrk when installed (or asked for),
    else the lean Python client."""
    if client == "wrk" or (client == "auto" and WrkBlocks.available()):
        return WrkBlocks(url, texts, OUT / f"{model.name}-wrk.lua", model.c1_wrk_seconds)
    return ClientBlocks(url, texts, model.c1_calls)


def rotate_blocks(sides: dict[str, Callable[[int], float]], blocks: int, first_block: int = 0,
                  mirror: bool = True) -> dict[str, list[float]]:
    """``blocks`` times, one block of each side (a callable: block number to
    its median ms), in the given order; with ``mirror`` the order is reversed
    every other block (A B C, C B A, ...), so no side always runs straight
    after the same neighbour (whose OpenMP threads may still spin). Returns
    each side's block medians."""
    names = list(sides)
    medians: dict[str, list[float]] = {name: [] for name in names}
    for b in range(first_block, first_block + blocks):
        for name in (names[::-1] if mirror and b % 2 else names):
            medians[name].append(sides[name](b))
    return medians


def alternate_blocks(raw: RawHelper, server: ClientBlocks | WrkBlocks, blocks: int, calls: int,
                     first_block: int = 0) -> tuple[list[float], list[float]]:
    """``blocks`` times: the median of ``calls`` back-to-back raw calls, then
    the server's median over a block of its own. Returns both lists."""
    medians = rotate_blocks({"raw": lambda b: raw.ask(f"single {calls}"), "server": server.block_p50_ms},
                            blocks, first_block, mirror=False)
    return medians["raw"], medians["server"]


def median_difference(server_ms: list[float], raw_ms: list[float]) -> float:
    """The median of the paired differences (server minus raw)."""
    return statistics.median(s - r for s, r in zip(server_ms, raw_ms))


def summarize_blocks(raw_ms: list[float], server_ms: list[float]) -> dict:
    differences = [s - r for s, r in zip(server_ms, raw_ms)]
    return {
        "block_raw_p50": statistics.median(raw_ms), "block_server_p50": statistics.median(server_ms),
        "median_block_difference": statistics.median(differences),
        "block_ci95": median_ci95(differences),
    }


def median_ci95(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A bootstrap 95% interval for the median: how far this run's median
    could move by chance, to read a figure against a bar (seeded: the same
    data gives the same interval). It treats the values as independent;
    neighbouring blocks share the box's drift, so the true
    interval is wider: a lower bound on the uncertainty."""
    pick = random.Random(0)
    medians = sorted(statistics.median(pick.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
