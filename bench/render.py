"""The one renderer: a scenario's JSON (``--out``) to a Markdown section.

Each scenario's section lives in one file (RESULTS.md; PEERS.md for peers;
RESULTS-gpu.md for gpu, one section per card; precision, one per set of
models measured) between two markers,
``<!-- bench:KEY -->`` and ``<!-- /bench:KEY -->``: a new render replaces
its own section and nothing else, or is appended when the file has none
yet. What lies outside the markers (history, hand-written summaries) is
never touched.

    python -m bench render bench/out/throughput.json             # into its file
    python -m bench render bench/out/latency.json --to -         # print it
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from bench.harness import DEFAULT_THROUGHPUT_MODELS, HERE
from bench.markdown import heading, interval, machine
from bench.render_passages import render_mixed, render_passages, render_rerank_mixed
from bench.render_throughput import render_gpu, render_precision, throughput_body
from bench.scenarios.rerank import DISTURBED_CORES

FILES = {"peers": "PEERS.md", "gpu": "RESULTS-gpu.md"}  # every other scenario: RESULTS.md


def target(doc: dict) -> tuple[Path, str]:
    """The file and the section key a scenario's JSON renders into."""
    scenario = doc["scenario"]
    key = f"gpu {doc['results']['card']}" if scenario == "gpu" else scenario
    if scenario == "precision":  # one section per set of models measured, so a rerun of one adds its own
        key += "".join(f" {m['name']}" for m in doc["results"]["models"]) or " c1"
    if scenario == "throughput" and doc["options"].get("models") not in (None, list(DEFAULT_THROUGHPUT_MODELS)):
        key += "".join(f" {name}" for name in doc["options"]["models"])  # the full run's section stays
    if scenario in ("chaos", "restart"):  # one section per model, spares and label (before/after runs side by side)
        options = doc["options"]
        key += "".join(f" {part}" for part in (
            options.get("model", "tiny-fill-mask") if scenario == "chaos" and options.get("model") != "tiny-fill-mask"
            else "", f"spare {options['spare_workers']}" if options.get("spare_workers") else "",
            options.get("label", "")) if part)
    return HERE / FILES.get(scenario, "RESULTS.md"), key


def markdown(doc: dict) -> str:
    return RENDERERS[doc["scenario"]](doc).rstrip("\n") + "\n"


def write(doc: dict, path: Path | None = None) -> Path:
    default, key = target(doc)
    path = path or default
    replace_section(path, key, markdown(doc))
    return path


def replace_section(path: Path, key: str, text: str) -> None:
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old, count=1)
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    path.write_text(new)


# --- the others -------------------------------------------------------------

def render_latency(doc: dict) -> str:
    lines = [
        heading("Concurrency 1", doc, "utc") + f"{machine(doc)}. Server flags: "
        + (f"`{doc['options']['server_args']}`" if doc["options"]["server_args"] else "the defaults")
        + ". Closed loops side by side: a block of back-to-back raw `pipeline(text)` calls (timed inside the raw "
        "process), then a block of back-to-back requests over one keep-alive connection (HTTP included), "
        "alternating; the figure is the median of the blocks' differences. Server blocks go through wrk when it "
        "is installed (a C client, whose own CPU per request is smallest; it runs for whole seconds), else through "
        "a lean Python client that reads status, headers and Content-Length body like wrk. In brackets: a "
        "bootstrap 95% interval of the median difference (it treats blocks as independent, which neighbours "
        "sharing the box's drift are not, so it is a lower bound on the uncertainty).",
        "",
        "| model | server blocks | pairs of blocks | raw p50 ms | server p50 ms | median block difference ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in doc["results"]["models"]:
        lines.append(f"| {r['title']} | {r['client']}, raw blocks of {r['raw_calls']} calls | {r['blocks']} | "
                     f"{r['block_raw_p50']:.2f} | {r['block_server_p50']:.2f} | {interval(r)} |")
    return "\n".join(lines)


def render_peers(doc: dict) -> str:
    r = doc["results"]
    servers = r["servers"]
    peers = [name for name in ("Starlette + asyncio-queue batching", "LitServe") if name in servers]
    lines = [
        f"`{doc['command']}` on {doc['date']}, {machine(doc)}, no GPU: all-MiniLM-L6-v2 feature-extraction, "
        f"closed-loop load at concurrency {r['concurrency']} for {r['seconds']:g} s (after {r['warmup']:g} s "
        f"warm-up) from bench.loadgen in its own process; every server batches at most {r['max_batch']} with a "
        f"{r['batch_timeout_ms']:g} ms batch timeout, servers run one after another in the same run. The peers call "
        "`pipeline(texts, batch_size=n)`, whose feature-extraction outputs are padded to the batch's longest input "
        "(slightly larger responses than inferserve's unpadded, per-input ones)."
        + (f" Skipped (not installed): {', '.join(r['skipped'])}." if r["skipped"] else ""),
        "",
        "| server | requests/s | " + "".join(f"vs {p.split()[0]} | " for p in peers) + "p50 ms | p99 ms | non-200 |",
        "|---|---:|" + "---:|" * len(peers) + "---:|---:|---:|",
    ]
    for name, s in servers.items():
        bad = sum(v for k, v in s["statuses"].items() if k != "200") + s.get("no_answer", 0)
        lines.append(f"| {name} | {s['rps']:.1f} | " + "".join(f"{s['rps'] / servers[p]['rps']:.2f}x | " for p in peers)
                     + f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {bad} |")
    return "\n".join(lines)


def _answers(ok: int, other: int, unanswered: int, *more: str) -> str:
    """How the requests of a fault-injection run ended; the unanswered ones are its point."""
    return ", ".join([f"**{ok} answered 200**", *more, f"{other} other codes", f"**{unanswered} unanswered**"])


def render_chaos(doc: dict) -> str:
    r, o = doc["results"], doc["options"]
    answers = _answers(r["200"], r["other_status"], r["no_answer"],
                       f"{r['503']} answered 503 (the client then waits Retry-After)")
    model = ("all-MiniLM-L6-v2 (one worker" if o.get("model") == "minilm" else "a tiny fill-mask model (one worker")
    model += f", {o['spare_workers']} spare)" if o.get("spare_workers") else ")"
    latency = (f" Share of 503s: **{r['share_503']:.1%}**; latency p50 {r['p50_ms']:.0f} ms, **p99 {r['p99_ms']:.0f} ms**."
               if "p99_ms" in r else "")
    label = f" ({o['label']})" if o.get("label") else ""
    return (heading("Chaos" + label, doc)
            + f"{r['sent']} requests at concurrency {o['concurrency']} to {model} while its serving worker was "
            f"SIGKILLed every {o['kill_every']:g} s ({r['worker_kills']} kills in {r['seconds']:g} s): {answers}, "
            f"**{r['wrong_answer']} wrong** (each answer checked against its own request).{latency}\n")


def render_restart(doc: dict) -> str:
    r, o = doc["results"], doc["options"]
    spare = f", {o['spare_workers']} spare" if o.get("spare_workers") else ", no spare"
    label = f" ({o['label']})" if o.get("label") else ""
    return (heading("A dead worker's cost" + label, doc)
            + f"{machine(doc)}; all-MiniLM-L6-v2, one worker{spare}. SIGKILL of the serving worker -> the first "
            f"request answered 200: **median {r['median_s']:.2f} s, max {r['max_s']:.2f} s** over "
            f"{len(r['kill_to_answer_s'])} kills ({', '.join(f'{s:.2f}' for s in r['kill_to_answer_s'])} s)"
            + (f"; the replacement's CPU time to its first answer: {', '.join(f'{s:.2f}' for s in r['replacement_cpu_s'])}"
               " CPU-s" if r.get("replacement_cpu_s") else "") + ". Cold "
            f"start to /ready: {r['cold_start_s']:.1f} s. Resident memory: "
            + (f"the preloaded helper {r['helper_rss_mb']} MB, " if r["helper_rss_mb"] else "no preloaded helper, ")
            + f"a worker {r['worker_rss_mb']} MB.\n")


def render_cluster(doc: dict) -> str:
    r = doc["results"]
    one, three = r["one_replica"], r["three_replicas"]
    answers = _answers(three["ok"], r["other_status"], three["no_answer"])
    return (heading("Replicas behind HAProxy", doc)
            + f"{machine(doc)}; closed-loop load at concurrency {r['concurrency']}, every answer counted. One replica "
            f"direct: {one['rps']:.1f} requests/s. Three replicas behind HAProxy for {r['duration']:g} s "
            f"({'; '.join(r['events'])}): {three['rps']:.1f} requests/s; {three['sent']} sent, {answers}; the "
            f"drained replica exited {r['drain_exit']}.\n")


def render_capacity(doc: dict) -> str:
    r = doc["results"]
    lines = [
        heading("What caps the server", doc)
        + f"{machine(doc)}; MiniLM, server flags `{' '.join(r['server_args'])}`. Load from 1, 2 and 4 load generator "
        "processes at once; requests/s summed over them (fixed window); each server process's CPU as a share of "
        "one core over the window. If more load generators add no requests/s, they are not the cap; a process "
        "near 1.0 core is.",
        "",
        "| route | load generators x concurrency | requests/s | p50 ms | p99 ms | mean batch | non-200 "
        "| front-end cores | worker cores |",
        "|---|---|---:|---|---|---|---:|---:|---|",
    ]
    for m in r["measurements"]:
        lines.append(f"| `{m['route']}` | {m['loadgens']} x {m['concurrency_each']} | {m['rps_total']:.1f} | "
                     f"{', '.join(map(str, m['p50_ms']))} | {', '.join(map(str, m['p99_ms']))} | "
                     f"{', '.join(map(str, m['mean_batch']))} | {m['non_200']} | {m['front_end_core_share']} | "
                     f"{', '.join(map(str, m['worker_process_core_shares']))} |")
    return "\n".join(lines)


# --- rerank ---------------------------------------------------------------

def _rounds(values: list[float], summary: dict) -> str:
    flags = summary.get("disturbed", [False] * len(values))
    return ", ".join(f"[{v:.1%}]" if bad else f"{v:.1%}" for v, bad in zip(values, flags))


def render_rerank(doc: dict) -> str:
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


RENDERERS = {"throughput": throughput_body, "precision": render_precision, "latency": render_latency, "peers": render_peers,
             "chaos": render_chaos, "cluster": render_cluster, "capacity": render_capacity, "gpu": render_gpu,
             "rerank": render_rerank, "passages": render_passages, "mixed": render_mixed,
             "restart": render_restart, "rerank-mixed": render_rerank_mixed}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("json", type=Path, help="a scenario's --out file")
    p.add_argument("--to", default=None, help="Markdown file to write the section into ('-': print it); "
                                              "default: the scenario's own (RESULTS.md, PEERS.md, RESULTS-gpu.md)")


def main(args: argparse.Namespace) -> None:
    doc = json.loads(args.json.read_text())
    if args.to == "-":
        sys.stdout.write(markdown(doc))
    else:
        print(f"wrote {write(doc, Path(args.to) if args.to else None)}")
