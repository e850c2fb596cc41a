"""Concurrency 1 against one raw ``pipeline(text)`` call, side by side.

On a noisy box the drift between two separate measurements (+-15% here)
swamps a 2 ms difference, so each server figure is compared with a raw
figure taken just before it: closed loops side by side, a block of
back-to-back raw calls (timed inside the raw process), then a block of
back-to-back requests over one keep-alive connection (wrk when installed,
else a lean Python client), alternating, --blocks times in one go. The
figure is the median of the blocks' differences, with a bootstrap 95%
interval. The same blocks as the throughput scenario's concurrency-1
column, only many more of them.

    python -m bench latency                         # minilm and bert-base, 40 blocks: ~5 min
    python -m bench latency --models minilm --blocks 4
"""

from __future__ import annotations

import argparse
import shlex

from bench.harness import MODELS, OUT, RawHelper, start_inferserve
from bench.raw import DTYPES
from bench.sidebyside import CLIENTS, alternate_blocks, open_blocks, summarize_blocks

SUMMARY = "concurrency 1 vs one raw call, alternating blocks side by side (~5 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["minilm", "bert-base"], choices=sorted(MODELS))
    p.add_argument("--blocks", type=int, default=40, help="pairs of blocks per model")
    p.add_argument("--client", choices=CLIENTS, default="auto", help="server side of the blocks: wrk if installed")
    p.add_argument("--raw-device", default="cpu")
    p.add_argument("--raw-dtype", choices=DTYPES, default="auto")
    p.add_argument("--server-args", default="", help="extra inferserve flags, in one string")


def run(args: argparse.Namespace) -> dict:
    results = []
    for name in args.models:
        model = MODELS[name]
        path, texts = model.path(), model.texts()
        print(f"[{name}] loading the raw pipeline and the server ...", flush=True)
        with RawHelper(model, path, texts, args.raw_device, args.raw_dtype) as raw, \
                start_inferserve(path, model.task, shlex.split(args.server_args),
                                 OUT / f"{name}-latency-server.log", args.server_root) as server:
            with open_blocks(server.url(model.route), model, texts, args.client) as blocks:
                alternate_blocks(raw, blocks, 1, model.c1_calls, first_block=args.blocks)  # warm both up
                raw_ms, server_ms = alternate_blocks(raw, blocks, args.blocks, model.c1_calls)
        result = {"name": name, "title": model.title, "client": blocks.label, "blocks": args.blocks,
                  "raw_calls": model.c1_calls, "raw_ms": raw_ms, "server_ms": server_ms,
                  **summarize_blocks(raw_ms, server_ms)}
        print(f"[{name}] server p50 {result['block_server_p50']:.2f} ms vs raw call {result['block_raw_p50']:.2f} ms: "
              f"{result['median_block_difference']:+.2f} [{result['block_ci95'][0]:+.2f}, "
              f"{result['block_ci95'][1]:+.2f}] ms", flush=True)
        results.append(result)
    return {"models": results}
