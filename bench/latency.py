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
import signal
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import MODELS, OUT, RawHelper, free_port, model_texts, start_raw_helper, start_server  # noqa: E402
from sidebyside import (  # noqa: E402
    CLIENTS, ClientBlocks, WrkBlocks, alternate_blocks, median_ci95, summarize_blocks,
)

PAIRS = {"minilm": 200, "bert-base": 120, "minilm-embed": 200}
# (blocks, calls per block) for the closed-loop comparison.
BLOCKS = {"minilm": (40, 20), "bert-base": (40, 10), "minilm-embed": (40, 20)}
# wrk blocks: seconds per block (a whole number: wrk's -d takes no fraction).
WRK_SECONDS = {"minilm": 1, "bert-base": 2, "minilm-embed": 1}


def measure(name: str, client_kind: str) -> dict:
    spec = MODELS[name]
    model = spec["path"]()
    texts = model_texts(name)
    raw = start_raw_helper(name, model, texts)
    port = free_port()
    server = start_server(model, spec["task"], port, [], OUT / f"{name}-latency-server.log")
    url = f"http://127.0.0.1:{port}{spec.get('route', '/')}"
    blocks, calls = BLOCKS[name]
    try:
        if client_kind == "wrk":
            wrk = WrkBlocks(url, texts, OUT / f"{name}-wrk.lua", WRK_SECONDS[name])
            wrk.block_p50_ms(0)  # warm up
            raw.ask("single 5")
            figures = {"pairs": 0, "blocks": f"{blocks}x{WRK_SECONDS[name]}s",
                       **summarize_blocks(*alternate_blocks(raw, wrk, blocks, calls))}
        else:
            figures = _measure_client(name, ClientBlocks(CLIENTS[client_kind](url), texts, calls), raw, blocks)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        raw.close()
    return {"title": spec["title"], "client": client_kind, **figures}


def _measure_client(name: str, client: ClientBlocks, raw: RawHelper, blocks: int) -> dict:
    """Pairs, then blocks, through one keep-alive connection."""
    try:
        for i in range(5):  # warm both
            raw.ask("single 1")
            client.call_ms(i)
        raw_ms, server_ms = [], []
        for i in range(PAIRS[name]):
            raw_ms.append(raw.ask("single 1"))  # timed inside the raw process: the bare call
            server_ms.append(client.call_ms(i))
        # Closed loops, side by side: a block of back-to-back raw calls, then
        # a block of back-to-back server requests, alternating. Interleaving
        # single calls (above) makes each side run while the other's OpenMP
        # threads still spin after its last forward pass (~9 ms here), which
        # neither a concurrency-1 client nor a raw loop meets; blocks avoid
        # that and still cancel the box's drift, block against block.
        block_figures = summarize_blocks(*alternate_blocks(raw, client, blocks, client.calls))
    finally:
        client.close()
    differences = [s - r for s, r in zip(server_ms, raw_ms)]
    return {
        "pairs": len(differences),
        "raw_p50": statistics.median(raw_ms), "server_p50": statistics.median(server_ms),
        "p50_difference": statistics.median(server_ms) - statistics.median(raw_ms),
        "median_paired_difference": statistics.median(differences),
        "paired_ci95": median_ci95(differences),
        "blocks": f"{blocks}x{client.calls}",
        **block_figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(PAIRS))
    default_clients = ["lean", "http.client"] + (["wrk"] if WrkBlocks.available() else [])
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
