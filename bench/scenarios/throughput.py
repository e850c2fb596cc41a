"""The server under closed-loop load vs the bare pipeline's limit.

For each model: load the bare pipeline in a helper process (bench.raw),
sweep its batch sizes, start `python -m inferserve` on 127.0.0.1, then
alternate rounds: the raw limit at its best batch size, then the server
under bench.loadgen (its own process) at each concurrency, then concurrency
1 side by side with single raw calls (bench.sidebyside: alternating blocks,
through wrk when it is installed), then `GET /health` while saturated, in a
window of its own. Every figure pairs a server measurement with a raw one
taken just before it, so drift on this noisy box cancels out.

With several raw variants (--raw-variants DTYPE:ENGINE ..., or --raw-dtype
DTYPE ... for torch ones), one raw helper per variant takes its own sweep
and limit every round, and reports how far its outputs move from a float32
torch copy's (bench.raw's ``agree``); the first is the one ratios are taken
against (match it to the server's --dtype and --engine).

    python -m bench throughput                       # 3 models, concurrency 1, 8, 64: ~15 min
    python -m bench throughput --models minilm --rounds 1 --seconds 3
    python -m bench throughput --server-args "--dtype bfloat16" --raw-dtype bfloat16 float32
    python -m bench throughput --raw-variants float32:torch bfloat16:torch float32:onnx
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from contextlib import ExitStack

from bench.harness import (
    DEFAULT_THROUGHPUT_MODELS,
    MODELS, OUT, Model, RawHelper, finish, load, probe_command, spawn, start_inferserve, write_bodies,
)
from bench.machine import ForeignCpu, rss_mb
from bench.raw import DTYPES, parse_variant, variant_key
from bench.sidebyside import CLIENTS, alternate_blocks, median_difference, open_blocks

SUMMARY = "raw pipeline limit vs the server at concurrency 1/8/64, alternating rounds (~15 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_THROUGHPUT_MODELS), choices=sorted(MODELS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/server rounds")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each measurement (x3 for bert-base)")
    p.add_argument("--warmup", type=float, default=1.0, help="load generator warm-up before each window")
    p.add_argument("--sweep-seconds", type=float, default=3.0, help="per batch size, to pick the best")
    p.add_argument("--c1-blocks", type=int, default=8,
                   help="concurrency 1 side by side: pairs of blocks per round (0: none)")
    p.add_argument("--client", choices=CLIENTS, default="auto", help="server side of the blocks: wrk if installed")
    p.add_argument("--raw-device", default="cpu", help="device of the raw pipeline (match the server's)")
    p.add_argument("--raw-dtype", nargs="+", choices=DTYPES, default=["auto"],
                   help="precision(s) of the raw pipeline, on torch; the first is the reference (match the server's)")
    p.add_argument("--raw-variants", nargs="+", type=raw_variant, default=None, metavar="DTYPE:ENGINE",
                   help="raw pipelines as precision:engine (float32:torch bfloat16:torch float32:onnx); "
                        "replaces --raw-dtype; the first is the reference")
    p.add_argument("--server-args", default="", help='extra inferserve flags, e.g. "--dtype float32 --workers 2"')


def raw_variant(text: str) -> str:
    try:
        return variant_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def raw_variants(args: argparse.Namespace) -> list[str]:
    """The raw helpers to run, as DTYPE:ENGINE; the first is the reference."""
    return args.raw_variants or [variant_key(d) for d in args.raw_dtype]


def run(args: argparse.Namespace) -> dict:
    server_args = shlex.split(args.server_args)
    return {"models": [bench_model(MODELS[name], args, server_args) for name in args.models]}


def best_batch(raw: RawHelper, seconds: float) -> tuple[dict[str, float], int]:
    """Two sweeps, the second in reverse order, keeping each size's better
    figure: on this noisy box one 3 s pass once picked b=8 over b=32 by
    chance, and the server then ran with batches of 8."""
    passes = [raw.ask(f"sweep {seconds}{order}") for order in ("", " reverse")]
    sweep = {b: max(p[b] for p in passes) for b in sorted(passes[0], key=int)}
    return sweep, int(max(sweep, key=sweep.get))


def open_raw_variants(stack: ExitStack, model: Model, path: str, texts: list[str], device: str,
                      variants: list[str], sweep_seconds: float,
                      sweep: bool = True, agree_texts: int = 64,
                      quiet: Callable[[], dict] | None = None) -> tuple[dict[str, RawHelper], dict[str, dict]]:
    """One raw helper per variant, each swept (its best batch size; unless
    not ``sweep``) and checked against float32 torch over the first
    ``agree_texts`` texts (its agreement), kept open in ``stack``. With
    ``quiet``, each sweep waits for it first (bench.machine.wait_for_quiet)
    and records the cores others used while it ran."""
    raws: dict[str, RawHelper] = {}
    figures: dict[str, dict] = {}
    for variant in variants:
        dtype, engine = parse_variant(variant)
        print(f"[{model.name}] loading the raw pipeline ({device}, {variant}) ...", flush=True)
        raws[variant] = stack.enter_context(RawHelper(model, path, texts, device, dtype, engine))
        agreement = raws[variant].ask(f"agree {agree_texts}")
        figures[variant] = {"loaded_dtype": raws[variant].loaded["dtype"], "engine": engine}
        if quiet:
            figures[variant]["before_sweep"] = quiet()
        meter = ForeignCpu() if quiet else None
        by_size, best = best_batch(raws[variant], sweep_seconds) if sweep else ({}, None)
        figures[variant].update(sweep=by_size, best_batch=best, agreement=agreement)
        if quiet:
            figures[variant]["sweep_foreign_cores"] = meter.cores()
        print(f"[{model.name}] raw {variant}: sweep (items/s by batch size) {by_size}; "
              f"min cosine vs float32 torch {agreement['min_cosine']:.6f}", flush=True)
    return raws, figures


def bench_model(model: Model, args: argparse.Namespace, server_args: list[str]) -> dict:
    path = model.path()
    texts = model.texts()
    bodies = write_bodies(model.name, texts)
    seconds = args.seconds * model.time_scale
    variants = raw_variants(args)
    reference = variants[0]
    with ExitStack() as stack:
        raws, raw_figures = open_raw_variants(stack, model, path, texts, args.raw_device, variants,
                                              args.sweep_seconds)
        # The server runs with its defaults (what a user gets) plus
        # --server-args; the limit is the raw pipeline at its own best batch size.
        server = stack.enter_context(start_inferserve(path, model.task, server_args,
                                                      OUT / f"{model.name}-server.log", args.server_root))
        url = server.url(model.route)
        c1 = (stack.enter_context(open_blocks(url, model, texts, args.client))
              if args.c1_blocks and 1 in args.concurrency else None)
        rounds: list[dict] = []
        for r in range(args.rounds):
            # Each server figure is paired with a raw figure taken just before
            # it: the reference variant's limit comes last.
            limits = {v: raws[v].ask(f"limit {raw_figures[v]['best_batch']} {seconds}")
                      for v in [*variants[1:], reference]}
            runs = {str(c): load(url, bodies, c, seconds, args.warmup) for c in args.concurrency}
            # Concurrency 1 against one raw call: alternating blocks, so each
            # server block has a raw block from the same few seconds. (A raw
            # p50 taken once per round and set against the load generator's
            # p50 let the box's drift land in the difference whole: the raw
            # call alone moved 12-18 ms between rounds.)
            c1_raw, c1_server = (alternate_blocks(raws[reference], c1, args.c1_blocks, model.c1_calls,
                                                  first_block=r * args.c1_blocks) if c1 else ([], []))
            # /health latency as a Kubernetes probe sees it while the worker is
            # saturated, in a window of its own: the probe (a urllib request
            # every 20 ms, in its own process) takes CPU from the model, which
            # the throughput figures above must not pay for.
            top = max(args.concurrency)
            probe = spawn(probe_command(server.url("/health"), args.warmup + 0.5, seconds - 1))
            probed = load(url, bodies, top, seconds, args.warmup)
            runs[str(top)].update(rps_while_probed=probed["rps"], health=finish(probe),
                                  front_end_rss_mb=rss_mb(server.pid))
            rounds.append({"limit": limits[reference], "limits": limits, "c1_raw_ms": c1_raw,
                           "c1_server_ms": c1_server, "runs": runs})
            versus_raw = f"c=1 vs raw {median_difference(c1_server, c1_raw):+.2f} ms, " if c1_raw else ""
            print(f"[{model.name}] round {r + 1}: limit "
                  + ", ".join(f"{v:.1f}/s ({d})" for d, v in limits.items()) + f", {versus_raw}"
                  + ", ".join(f"c={c}: {v['rps']:.1f}/s p50 {v['p50_ms']:.1f} ms" for c, v in runs.items())
                  + f", /health p99 {runs[str(top)]['health']['p99_ms']:.1f} ms", flush=True)
    return {"name": model.name, "title": model.title, "route": model.route, "server_args": server_args,
            "reference": reference, "reference_dtype": reference, "raw": raw_figures, "rounds": rounds,
            "c1_client": c1.label if c1 else None, "c1_blocks": [args.c1_blocks, model.c1_calls]}
