"""Rerank with mixed-length documents: the server's pairs/s against the
cross-encoder's raw limits on the same pairs in arrival order and sorted by
length (issue 27's goal: at concurrency 64, at least 85% of the sorted one).

The model: the rerank scenario's cross-encoder (all-MiniLM-L6-v2's encoder
under a seeded random one-logit head, bench/out/models/minilm-cross-encoder).
Requests: ``POST /rerank`` with one ~10-word query and --docs (20) documents
of 20-250 words (uniform), both cut from the standard library's docstrings
(bench/passages.py, seeded), each request's documents following the last
one's. The server starts first with ``--engine torch --request-timeout 120``
(plus --server-args; the raw helper has no ONNX Runtime, and at 64 x 20
pairs in line a request waits longer than the default 30 s); a raw helper
(``python -m bench.rerank_raw``, its own process) then loads the model in
the precision the server chose (its /info). Each round: the raw limit over
the first 4 x --batch pairs of the request stream as they come, then the
same pairs sorted by token count (batches of --batch both), then the server
under closed-loop load at each --concurrency, its windows sized as the
rerank scenario's (several latencies of concurrency x N pairs in line), its
padding efficiency and mean batch read from /metrics around each run.
Ratios: answered pairs/s (requests/s x N) and computed pairs/s (the
server's own count of pairs through the model, steadier: answers come in
clumps) over the length-sorted limit taken just before.

    python -m bench rerank-mixed --write           # ~6 min after the wait
    python -m bench rerank-mixed --rounds 1 --seconds 1 --concurrency 1 4 --docs 4 --count 32 --batch 8
        --wait-quiet 0 --out /tmp/rm.json          # smoke, one command (~3 min)
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from contextlib import ExitStack

from bench.harness import OUT, start_inferserve, write_json
from bench.machine import ForeignCpu, add_quiet_arguments, load_average, wait_quiet
from bench.machine import cpu_name
from bench.passage_runs import counters, get_json, window_figures
from bench.passages import passages, queries
from bench.rerank_raw import pair_stream, request
from bench.scenarios.rerank import RawRanker, check_scores, measure_server, model_path, server_info, window

SUMMARY = "rerank, N mixed-length documents a request: server vs raw arrival-order and length-sorted limits (~6 min)"
GOAL = 0.85


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs", type=int, default=20, help="documents per request")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 64], help="the last is the goal's")
    p.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds")
    p.add_argument("--seconds", type=float, default=8.0, help="each raw limit; the least server window")
    p.add_argument("--warmup", type=float, default=1.0, help="the least load generator warm-up")
    p.add_argument("--window-latencies", type=float, default=1.5,
                   help="each server window lasts at least this many expected latencies (concurrency x N / "
                        "sorted pairs/s)")
    p.add_argument("--count", type=int, default=256, help="distinct documents")
    p.add_argument("--words", nargs=2, type=int, default=[20, 250], metavar=("LOW", "HIGH"))
    p.add_argument("--batch", type=int, default=32, help="the raw limits' batch size")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the raw helper")
    p.add_argument("--server-args", default="",
                   help='inferserve flags after "--task text-ranking --engine torch --request-timeout 120"')
    add_quiet_arguments(p, threshold=1.5)


def run(args: argparse.Namespace) -> dict:
    quiet = wait_quiet(args.wait_quiet, args.wait_max)
    path = model_path()
    asked, documents = queries(64), passages(args.count, *args.words)
    n = args.docs
    pairs_file = write_json("rerank-mixed-pairs.json", pair_stream(n, 64, asked, documents))
    bodies = [json.dumps(dict(zip(("query", "texts"), request(i, n, asked, documents)))) for i in range(256)]
    bodies_file = write_json("rerank-mixed-bodies.json", bodies)
    server_args = ["--engine", "torch", "--request-timeout", "120", *shlex.split(args.server_args)]
    with ExitStack() as stack:
        log = OUT / "rerank-mixed-server.log"
        server = stack.enter_context(start_inferserve(path, "text-ranking", server_args, log, args.server_root))
        info = {**server_info(server.url("/info")), "cost_model": get_json(server.url("/info")).get("cost_model")}
        dtype = info.get("dtype") or "float32"
        print(f"[rerank-mixed] server {info}; loading the raw helper ({dtype}, {args.threads} threads) ...",
              flush=True)
        raw = stack.enter_context(RawRanker(path, pairs_file, args.threads, dtype))
        check = check_scores(server.url("/rerank"), raw, bodies[:2], n)
        print(f"[rerank-mixed] scores vs raw over {check['pairs']} pairs: max |diff| {check['max_abs_diff']:.2e}",
              flush=True)
        rounds = [measure_round(args, raw, server, bodies_file, info, r) for r in range(args.rounds)]
    return {"cpu": cpu_name(), "model": path, "docs": n, "words": args.words, "count": args.count,
            "batch": args.batch, "server_args": server_args, "info": info, "raw_loaded": raw.loaded,
            "quiet": quiet, "load_average_after": load_average(), "check": check, "rounds": rounds,
            "summary": summarize(rounds, args.concurrency)}


def measure_round(args: argparse.Namespace, raw: RawRanker, server, bodies, info: dict, r: int) -> dict:
    meter = ForeignCpu()
    limits = {order: raw.ask(f"ordered {args.batch} {args.seconds} {order}") for order in ("arrival", "length")}
    entry = {"load_average": load_average(), "limits": limits, "foreign_cores_raw": meter.cores(), "runs": {}}
    rate = limits["length"]["items_s"]
    for c in args.concurrency:
        _, warmup, seconds = window(args, c, args.docs, rate, info.get("max_batch_size") or 32)
        meter, before = ForeignCpu(), counters(server)
        served = measure_server(server.url("/rerank"), server.url("/metrics"), bodies, server.pid, c, seconds, warmup)
        served.update(window_figures(before, counters(server)))
        served["pairs_s"] = served["rps"] * args.docs
        served["foreign_cores"] = meter.cores()
        entry["runs"][str(c)] = served
    print(f"[rerank-mixed] round {r + 1}: raw arrival {limits['arrival']['items_s']:.1f} pairs/s, sorted "
          f"{rate:.1f} pairs/s; " + ", ".join(
              f"c={c}: {v['pairs_s']:.1f} pairs/s answered ({v['pairs_s'] / rate:.0%} of sorted), computed "
              f"{v['server_side']['pairs_per_s']:.1f} ({v['server_side']['pairs_per_s'] / rate:.0%}), p50 "
              f"{v['p50_ms']:.0f} ms, padding eff {v['padding_efficiency'] or 0:.2f}, batch "
              f"{v['mean_batch_size'] or 0:.1f}, others' cores {v['foreign_cores']:.2f}"
              for c, v in entry["runs"].items()), flush=True)
    return entry


def summarize(rounds: list[dict], concurrency: list[int]) -> dict:
    """Per concurrency, medians over rounds of the answered and computed
    pairs/s and of their ratios to the sorted limit taken just before; the
    goal at the last concurrency; whether each higher concurrency kept up."""
    median = statistics.median

    def ratio(key, c: int) -> float:
        return median(key(r["runs"][str(c)]) / r["limits"]["length"]["items_s"] for r in rounds)

    answered = {str(c): ratio(lambda x: x["pairs_s"], c) for c in concurrency}
    computed = {str(c): ratio(lambda x: x["server_side"]["pairs_per_s"], c) for c in concurrency}
    rates = {str(c): median(r["runs"][str(c)]["pairs_s"] for r in rounds) for c in concurrency}
    ordered = [rates[str(c)] for c in sorted(concurrency)]
    top = str(concurrency[-1])
    return {"ratio_to_sorted": answered, "computed_ratio_to_sorted": computed, "median_pairs_s": rates,
            "rises_with_concurrency": all(b >= a for a, b in zip(ordered, ordered[1:])),
            "goal": {"concurrency": int(top), "target": GOAL, "ratio": answered[top], "met": answered[top] >= GOAL}}
