"""Precision and engines: the raw limit per precision and engine, and servers
with other --dtype/--engine flags, side by side.

Two parts, one run:

1. *Concurrency 64 against each raw variant.* Per model, one raw helper per
   --raw-variants entry (DTYPE:ENGINE; bench.raw, ONNX Runtime through the
   server's own inferserve.model.engines.onnx_model, OpenVINO through its
   inferserve.model.openvino_engine.openvino_models: float32:openvino the f32
   precision hint, bfloat16:openvino bf16), each swept for its
   best batch size and checked against a float32 torch copy (min cosine
   over the model's texts; fill-mask: largest probability change too).
   Then every --servers entry (inferserve flags; "" is the defaults) is
   started, and --rounds rounds alternate: each variant's limit at its best
   batch size, then each server under closed-loop load at --concurrency
   (the servers' order reversed every other round). Every ratio pairs a
   server figure with the raw figures of its own round.
2. *Concurrency 1, servers side by side* (--c1-model, MiniLM /embed by
   default): every --c1-servers entry and the single calls of the --c1-raw
   variants (``pipeline(text)``, or forward + pooling), a block of each in turn,
   mirrored every other block (A B C ..., ... C B A), --c1-blocks times;
   each server's p50 against --c1-baseline's, block by block.

The first raw variant is the reference of "vs" columns; float32:torch is the
eager-float32 raw limit. Each server's /info (the precision --dtype auto
chose and why, the engine it serves with) goes into the JSON and the table.

Other people's processes: --wait-quiet L waits (polling every 60 s, at most
--wait-max s) until the 1-minute load average is under L before measuring;
the load average is recorded before the run and every round either way.
Then, because a load average cannot tell this run's processes from anyone
else's, every sweep, round and concurrency-1 cycle first waits (at most
--round-wait s; --wait-budget s in all) until processes outside this run
use under --foreign-max cores (bench.machine.ForeignCpu: the machine's busy
time minus this process tree's), and records what they used while it ran;
a round or cycle during which they used more is flagged, left out of the
medians and redone (--redo rounds per model; half as many cycles again).
Two torch threads on two cores lose whole time slices to one busy
neighbour (a raw MiniLM limit read 140, then 19 items/s in two rounds
while a test suite ran; ONNX Runtime's 198, then 82), so an unflagged
comparison of the two under someone else's load says little about either.

    python -m bench precision                                # the longest scenario (needs the onnx and
                                                             # openvino extras)
    python -m bench precision --models minilm-embed --rounds 1 --seconds 3 --c1-blocks 2
    python -m bench precision --servers "" "--engine onnx" --c1-servers "" "--dtype float32 --engine torch"

Flag strings with a space ("--engine onnx") pass as values; one without
("--engine=onnx") would read as an option of this command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import urllib.request
from contextlib import ExitStack

from bench.harness import MODELS, OUT, Model, RawHelper, Server, load, start_inferserve, write_bodies
from bench.machine import ForeignCpu, add_quiet_arguments, load_average, wait_for_quiet, wait_quiet
from bench.scenarios.throughput import open_raw_variants, raw_variant
from bench.sidebyside import CLIENTS, median_ci95, open_blocks, rotate_blocks

SUMMARY = "raw limit per precision and engine vs servers at c=64; c=1 of servers with other flags (the longest)"
BASELINE = "--dtype float32 --engine torch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="*", default=["minilm", "minilm-embed", "minilm-passages", "bert-base"],
                   choices=sorted(MODELS),
                   help="models of the concurrency-64 part (none: concurrency 1 only)")
    p.add_argument("--raw-variants", nargs="+", type=raw_variant, metavar="DTYPE:ENGINE",
                   default=["float32:torch", "bfloat16:torch", "float32:onnx", "float32:openvino",
                            "bfloat16:openvino"],
                   help="raw helpers; the first is the reference of the 'vs' columns")
    p.add_argument("--servers", nargs="+", default=["", "--engine torch", "--engine onnx", "--engine openvino"],
                   metavar="FLAGS",
                   help='inferserve flags of each server at --concurrency ("": the defaults, whichever engine '
                        '--engine auto picks; each server\'s /info says)')
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (x3 for bert-base)")
    p.add_argument("--warmup", type=float, default=1.0, help="load generator warm-up before each window")
    p.add_argument("--sweep-seconds", type=float, default=1.5, help="per batch size, to pick the best")
    p.add_argument("--agree-texts", type=int, default=64, help="texts the agreement with float32 torch is taken over")
    p.add_argument("--c1-model", default="minilm-embed", choices=[*sorted(MODELS), "none"],
                   help="model of the concurrency-1 part ('none': skip it)")
    p.add_argument("--c1-servers", nargs="+", default=["", BASELINE, "--engine onnx", "--engine openvino"],
                   metavar="FLAGS",
                   help="inferserve flags of each server at concurrency 1")
    p.add_argument("--c1-baseline", default=BASELINE, metavar="FLAGS",
                   help="the --c1-servers entry the others' p50 is divided by")
    p.add_argument("--c1-raw", nargs="+", type=raw_variant,
                   default=["bfloat16:openvino", "float32:openvino", "float32:torch", "float32:onnx"],
                   metavar="DTYPE:ENGINE", help="raw variants (of --raw-variants) whose single calls join the "
                                                "concurrency-1 blocks; the first is what the servers are set against")
    p.add_argument("--c1-blocks", type=int, default=12, help="blocks of each side at concurrency 1")
    p.add_argument("--client", choices=CLIENTS, default="auto", help="server side of the blocks: wrk if installed")
    p.add_argument("--raw-device", default="cpu")
    add_quiet_arguments(p, threshold=0.0)
    p.add_argument("--foreign-max", type=float, default=0.3, metavar="CORES",
                   help="a round (sweep, concurrency-1 cycle) waits until processes outside this run use under "
                        "CORES, and one during which they used more is flagged and redone (0: off)")
    p.add_argument("--round-wait", type=float, default=90.0, help="seconds each such wait lasts at most")
    p.add_argument("--wait-budget", type=float, default=600.0,
                   help="seconds all those waits may take together; then rounds are measured and flagged")
    p.add_argument("--redo", type=int, default=2, help="flagged rounds redone per model, at most")


def label(flags: str) -> str:
    return flags.strip() or "defaults"


_waited = [0.0]  # seconds spent in quiet_check's waits this run


def quiet_check(args: argparse.Namespace):
    """Before a measurement: wait until others use under --foreign-max cores
    (at most --round-wait s, and --wait-budget s over the whole run)."""
    if not args.foreign_max:
        return None

    def check() -> dict:
        longest = max(0.0, min(args.round_wait, args.wait_budget - _waited[0]))
        seen = wait_for_quiet(args.foreign_max, longest)
        _waited[0] += seen["waited_s"]
        return seen

    return check


def server_info(server: Server) -> dict:
    with urllib.request.urlopen(server.url("/info"), timeout=10) as r:
        info = json.load(r)
    return {"dtype": info.get("model_dtype"), "engine": info.get("engine"), "precision": info.get("precision")}


def run(args: argparse.Namespace) -> dict:
    if args.c1_baseline not in args.c1_servers:
        args.c1_servers.append(args.c1_baseline)
    quiet = wait_quiet(args.wait_quiet, args.wait_max)
    names = list(dict.fromkeys([*args.models, *([args.c1_model] if args.c1_model != "none" else [])]))
    models, c1 = [], None
    for name in names:
        result, compared = bench_model(MODELS[name], args, top=name in args.models, c1=name == args.c1_model)
        if result:
            models.append(result)
        c1 = compared or c1
    return {"quiet": quiet, "load_average_after": load_average(), "waited_for_others_s": round(_waited[0]),
            "models": models, "c1": c1}


def start(stack: ExitStack, servers: dict[str, Server], infos: dict[str, dict], model: Model, path: str,
          flags: str, args: argparse.Namespace) -> Server:
    if flags not in servers:
        print(f"[{model.name}] starting the server ({label(flags)}) ...", flush=True)
        slug = "-".join(shlex.split(flags)).replace("--", "") or "defaults"
        servers[flags] = stack.enter_context(start_inferserve(path, model.task, shlex.split(flags),
                                                              OUT / f"{model.name}-precision-{slug}.log",
                                                              args.server_root))
        infos[label(flags)] = server_info(servers[flags])
        print(f"[{model.name}] {label(flags)}: {infos[label(flags)]}", flush=True)
    return servers[flags]


def bench_model(model: Model, args: argparse.Namespace, top: bool, c1: bool) -> tuple[dict | None, dict | None]:
    path = model.path()
    texts = model.texts()
    bodies = write_bodies(model.name, texts)
    seconds = args.seconds * model.time_scale
    variants = args.raw_variants
    reference = variants[0]
    with ExitStack() as stack:
        raws, raw_figures = open_raw_variants(stack, model, path, texts, args.raw_device, variants,
                                              args.sweep_seconds, sweep=top, agree_texts=args.agree_texts,
                                              quiet=quiet_check(args))
        servers: dict[str, Server] = {}
        infos: dict[str, dict] = {}
        result = None
        if top:
            for flags in args.servers:
                start(stack, servers, infos, model, path, flags, args)
            rounds: list[dict] = []
            # A round during which others' processes took CPU is flagged and
            # redone (up to --redo times): its figures are theirs as much as ours.
            while (sum(x["clean"] for x in rounds) < args.rounds
                   and len(rounds) < args.rounds + args.redo):
                r = len(rounds)
                check = quiet_check(args)
                waited = check() if check else None
                averages = load_average()
                meter = ForeignCpu()
                # The reference's limit comes last, just before the servers.
                limits = {v: raws[v].ask(f"limit {raw_figures[v]['best_batch']} {seconds}")
                          for v in [*variants[1:], reference]}
                order = args.servers[::-1] if r % 2 else args.servers
                runs = {label(f): load(servers[f].url(model.route), bodies, args.concurrency, seconds, args.warmup)
                        for f in order}
                foreign = meter.cores()
                clean = not args.foreign_max or foreign < args.foreign_max
                rounds.append({"load_average": averages, "before": waited, "foreign_cores": foreign, "clean": clean,
                               "limits": limits, "limit": limits[reference],
                               "runs": {s: {str(args.concurrency): runs[s]} for s in map(label, args.servers)}})
                print(f"[{model.name}] round {r + 1} (load average {averages}, others used {foreign:.2f} cores"
                      + ("" if clean else ": flagged") + "): limit "
                      + ", ".join(f"{v:.1f}/s ({k})" for k, v in limits.items()) + "; c="
                      + f"{args.concurrency}: "
                      + ", ".join(f"{s} {x['rps']:.1f}/s p50 {x['p50_ms']:.0f} ms" for s, x in runs.items()),
                      flush=True)
            result = {"name": model.name, "title": model.title, "route": model.route, "reference": reference,
                      "raw": raw_figures, "servers": [label(f) for f in args.servers], "info": infos,
                      "concurrency": args.concurrency, "rounds": rounds}
        compared = None
        if c1:
            for flags in args.c1_servers:
                start(stack, servers, infos, model, path, flags, args)
            compared = concurrency_1(model, texts, raws, {label(f): servers[f] for f in args.c1_servers},
                                     infos, args, stack)
        return result, compared


def concurrency_1(model: Model, texts: list[str], raws: dict[str, RawHelper], servers: dict[str, Server],
                  infos: dict[str, dict], args: argparse.Namespace, stack: ExitStack) -> dict:
    """Every server and raw variant a block at a time, mirrored every other block."""
    sides = {}
    client = None
    for name, server in servers.items():
        blocks = stack.enter_context(open_blocks(server.url(model.route), model, texts, args.client))
        client = blocks.label
        sides[name] = blocks.block_p50_ms
    joining = [v for v in args.c1_raw if v in raws]
    for variant in joining:
        sides[f"raw {variant}"] = (lambda b, raw=raws[variant]: raw.ask(f"single {model.c1_calls}"))
    print(f"[{model.name}] concurrency 1: {args.c1_blocks} blocks of each of {', '.join(sides)} ...", flush=True)
    before = load_average()
    rotate_blocks(sides, 1, first_block=args.c1_blocks)  # warm every side up
    # One cycle (a block of each side) at a time, each after a wait for the
    # others to be quiet; a cycle during which they were not is flagged and
    # left out of the figures, and another cycle is run instead (up to half
    # as many again).
    check = quiet_check(args)
    cycles: list[dict] = []
    while (sum(c["clean"] for c in cycles) < args.c1_blocks
           and len(cycles) < args.c1_blocks + (args.c1_blocks + 1) // 2):
        waited = check() if check else None
        meter = ForeignCpu()
        block = rotate_blocks(sides, 1, first_block=len(cycles))
        foreign = meter.cores()
        cycles.append({"block_p50_ms": {k: v[0] for k, v in block.items()}, "foreign_cores": foreign,
                       "before": waited, "clean": not args.foreign_max or foreign < args.foreign_max})
    kept = [c for c in cycles if c["clean"]] or cycles
    medians = {name: [c["block_p50_ms"][name] for c in kept] for name in sides}
    print(f"[{model.name}] concurrency 1: {len(kept)} of {len(cycles)} cycles kept (others used "
          + ", ".join(f"{c['foreign_cores']:.2f}" for c in cycles) + " cores)", flush=True)
    baseline = label(args.c1_baseline)
    raw_reference = f"raw {joining[0]}" if joining else None
    summary = {}
    for name, values in medians.items():
        ratios = [v / b for v, b in zip(values, medians[baseline])]
        summary[name] = {"p50_ms": statistics.median(values), "ratio_to_baseline": statistics.median(ratios),
                         "ratio_ci95": median_ci95(ratios)}
        if raw_reference:
            differences = [v - r for v, r in zip(values, medians[raw_reference])]
            summary[name].update(minus_raw_ms=statistics.median(differences),
                                 minus_raw_ci95=median_ci95(differences))
        print(f"[{model.name}] c=1 {name}: p50 {summary[name]['p50_ms']:.2f} ms, "
              f"{summary[name]['ratio_to_baseline']:.3f}x {baseline}", flush=True)
    return {"name": model.name, "title": model.title, "route": model.route, "client": client,
            "raw_calls": model.c1_calls, "blocks": args.c1_blocks, "baseline": baseline,
            "raw_reference": raw_reference, "info": {s: infos[s] for s in servers}, "block_p50_ms": medians,
            "cycles": cycles, "kept": len(kept), "summary": summary, "load_average": [before, load_average()]}
