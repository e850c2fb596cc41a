"""Queries beside passages: are short inputs stuck behind long ones?

Two closed-loop load generators at once against one server: 80% of the
clients send ~10-word queries, 20% send 20-250-word passages (both cut from
the standard library's docstrings, bench/passages.py). Reported per class:
rate, p50 and p99; beside them, the time of one batch of 32 length-sorted
passages in the raw helper (same precision and engine as the server) and
the server's mean batch time in the window. The goal: the queries' p99 at
most twice one passage batch.

    python -m bench mixed                                        # minilm-embed, concurrency 64: ~3 min
    python -m bench mixed --rounds 1 --seconds 3 --count 64
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from contextlib import ExitStack

from bench.harness import MODELS, finish, load_command, spawn, write_bodies
from bench.machine import cpu_name
from bench.passage_runs import counters, open_server_and_raw, raw_limits, window_figures
from bench.passages import passages, queries

SUMMARY = "80% short queries + 20% passages: each class's p99 beside one passage batch (~3 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm-embed", choices=sorted(MODELS))
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--query-share", type=float, default=0.8, help="share of the clients sending queries")
    p.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds")
    p.add_argument("--seconds", type=float, default=10.0, help="each measurement (x3 for bert-base)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--count", type=int, default=256, help="distinct passages (and as many queries)")
    p.add_argument("--words", nargs=2, type=int, default=[20, 250], metavar=("LOW", "HIGH"), help="passage lengths")
    p.add_argument("--batch", type=int, default=32, help="the raw passage batch")
    p.add_argument("--server-args", default="", help="extra inferserve flags")


def run(args: argparse.Namespace) -> dict:
    model = MODELS[args.model]
    mask = model.task == "fill-mask"
    long, short = passages(args.count, *args.words, mask=mask), queries(args.count, mask=mask)
    long_bodies = write_bodies(f"{model.name}-mixed-passages", long)
    short_bodies = write_bodies(f"{model.name}-mixed-queries", short)
    query_clients = max(1, min(args.concurrency - 1, round(args.concurrency * args.query_share)))
    passage_clients = args.concurrency - query_clients
    seconds = args.seconds * model.time_scale
    with ExitStack() as stack:
        server, raw, chosen = open_server_and_raw(stack, model, model.path(), long, shlex.split(args.server_args),
                                                  f"{model.name}-mixed")
        url = server.url(model.route)
        rounds = []
        for r in range(args.rounds):
            limits = raw_limits(raw, args.batch, seconds)
            passage_batch_ms = 1000 * args.batch / limits["length"]["items_s"]
            before = counters(server)
            loads = {"queries": spawn(load_command(url, short_bodies, query_clients, seconds, args.warmup)),
                     "passages": spawn(load_command(url, long_bodies, passage_clients, seconds, args.warmup))}
            runs = {kind: finish(process) for kind, process in loads.items()}
            window = window_figures(before, counters(server))
            rounds.append({"limits": limits, "passage_batch_ms": passage_batch_ms, "runs": runs, "server": window,
                           "query_p99_in_passage_batches": runs["queries"]["p99_ms"] / passage_batch_ms})
            print(f"[{model.name}] round {r + 1}: one sorted passage batch of {args.batch}: {passage_batch_ms:.0f} ms; "
                  + ", ".join(f"{kind} {v['rps']:.1f}/s p50 {v['p50_ms']:.0f} ms p99 {v['p99_ms']:.0f} ms"
                              for kind, v in runs.items())
                  + f"; server batches {window['mean_batch_ms'] or 0:.0f} ms, "
                    f"padding eff {window['padding_efficiency'] or 0:.2f}", flush=True)
    ratios = [r["query_p99_in_passage_batches"] for r in rounds]
    return {"name": model.name, "title": model.title, "route": model.route, "server_args": args.server_args,
            "cpu": cpu_name(), "words": args.words, "concurrency": args.concurrency, "clients": {"queries": query_clients, "passages": passage_clients},
            "batch": args.batch, **chosen, "rounds": rounds,
            "summary": {"query_p99_in_passage_batches": statistics.median(ratios), "goal": 2.0,
                        "met": statistics.median(ratios) <= 2.0}}
