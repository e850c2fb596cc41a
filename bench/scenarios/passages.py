"""Mixed-length passages: the server against the raw limits of the same
precision and engine, in arrival order and sorted by length.

Passages of 20-250 words (uniform) cut from the standard library's
docstrings (bench/passages.py), one per request. The server starts first
with its defaults; a raw helper loads the model in the precision and engine
the server chose (its /info). Each round: the raw limit over 4 x 32 of the
passages in arrival order, then the same passages sorted by length (batches
of 32), then the server under closed-loop load at each concurrency, with
its padding efficiency and mean batch read from /metrics around the window.

    python -m bench passages                                      # minilm-embed and bert-base: ~10 min
    python -m bench passages --models minilm-embed --rounds 1 --seconds 3 --count 64
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from contextlib import ExitStack

from bench.harness import MODELS, load, write_bodies
from bench.machine import cpu_name
from bench.passage_runs import counters, open_server_and_raw, raw_limits, window_figures
from bench.passages import passages

SUMMARY = "mixed-length passages: server vs raw arrival-order and length-sorted limits (~10 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["minilm-embed", "bert-base"], choices=sorted(MODELS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 64])
    p.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds")
    p.add_argument("--seconds", type=float, default=10.0, help="each measurement (x3 for bert-base)")
    p.add_argument("--warmup", type=float, default=2.0, help="load generator warm-up before each window")
    p.add_argument("--count", type=int, default=256, help="distinct passages")
    p.add_argument("--words", nargs=2, type=int, default=[20, 250], metavar=("LOW", "HIGH"))
    p.add_argument("--batch", type=int, default=32, help="the raw limits' batch size")
    p.add_argument("--server-args", default="", help='extra inferserve flags, e.g. "--max-batch-tokens 2048"')


def run(args: argparse.Namespace) -> dict:
    return {"cpu": cpu_name(), "models": [bench_model(name, args) for name in args.models]}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    model = MODELS[name]
    texts = passages(args.count, *args.words, mask=model.task == "fill-mask")
    bodies = write_bodies(f"{name}-passages", texts)
    seconds = args.seconds * model.time_scale
    with ExitStack() as stack:
        server, raw, chosen = open_server_and_raw(stack, model, model.path(), texts,
                                                  shlex.split(args.server_args), f"{name}-passages")
        url = server.url(model.route)
        rounds = []
        for r in range(args.rounds):
            limits = raw_limits(raw, args.batch, seconds)
            runs = {}
            for c in args.concurrency:
                before = counters(server)
                runs[str(c)] = load(url, bodies, c, seconds, args.warmup)
                runs[str(c)].update(window_figures(before, counters(server)))
            rounds.append({"limits": limits, "runs": runs})
            sorted_rate = limits["length"]["items_s"]
            print(f"[{name}] round {r + 1}: raw arrival {limits['arrival']['items_s']:.1f}/s, "
                  f"sorted {sorted_rate:.1f}/s; "
                  + ", ".join(f"c={c}: {v['rps']:.1f}/s ({v['rps'] / sorted_rate:.0%} of sorted) "
                              f"p50 {v['p50_ms']:.0f} ms, padding eff {v['padding_efficiency'] or 0:.2f}, "
                              f"batch {v['mean_batch_size'] or 0:.1f}" for c, v in runs.items()), flush=True)
    return {"name": name, "title": model.title, "route": model.route, "server_args": args.server_args,
            "words": args.words, "count": args.count, "batch": args.batch, **chosen, "rounds": rounds,
            "summary": summarize(rounds, args.concurrency)}


def summarize(rounds: list[dict], concurrency: list[int]) -> dict:
    """Per concurrency, the median over rounds: the ratio to the
    length-sorted limit taken just before it, and the rate; and whether
    every higher concurrency kept up with the lower ones."""
    ratios = {str(c): statistics.median(r["runs"][str(c)]["rps"] / r["limits"]["length"]["items_s"] for r in rounds)
              for c in concurrency}
    rates = {str(c): statistics.median(r["runs"][str(c)]["rps"] for r in rounds) for c in concurrency}
    ordered = [rates[str(c)] for c in sorted(concurrency)]
    return {"ratio_to_sorted": ratios, "median_rps": rates,
            "rises_with_concurrency": all(b >= a for a, b in zip(ordered, ordered[1:]))}
