"""The throughput, gpu and precision sections: the server against the raw
limit, per precision and engine, with every round's figures (bench.render
dispatches here)."""

from __future__ import annotations

import statistics

from bench.markdown import heading, interval, machine
from bench.sidebyside import median_difference, summarize_blocks


# --- throughput and gpu -----------------------------------------------------

def _summarize(result: dict, concurrency: int) -> dict:
    rounds = result["rounds"]
    runs = [r["runs"][str(concurrency)] for r in rounds]
    median = statistics.median
    return {
        "rps": median([x["rps"] for x in runs]),
        "ratio": median([x["rps"] / r["limit"] for x, r in zip(runs, rounds)]),
        "ratios": [x["rps"] / r["limit"] for x, r in zip(runs, rounds)],
        "p50_ms": median([x["p50_ms"] for x in runs]),
        "p99_ms": median([x["p99_ms"] for x in runs]),
        "mean_batch": median([x["mean_batch"] for x in runs]),
        "non_200": sum(sum(v for k, v in x["statuses"].items() if str(k) != "200") for x in runs),
        "health_p99_ms": max((x["health"]["p99_ms"] for x in runs if "health" in x), default=None),
        "rps_while_probed": median([x["rps_while_probed"] for x in runs if "rps_while_probed" in x] or [float("nan")]),
        "front_end_rss_mb": max((x["front_end_rss_mb"] for x in runs if "front_end_rss_mb" in x), default=None),
    }


def _variant_label(raw: dict) -> str:
    """float32, or float32 on onnx (older runs had torch only)."""
    engine = raw.get("engine", "torch")
    return raw["loaded_dtype"] + (f" on {engine}" if engine != "torch" else "")


def _reference(result: dict) -> str:
    return result.get("reference", result["reference_dtype"])


def _agreement(raw: dict) -> str:
    agreement = raw.get("agreement")
    if not agreement:
        return "–"
    if agreement.get("reference") == "itself":
        return "1 (the float32 torch reference)"
    cosine = agreement["min_cosine"]
    text = f"1 − {1 - cosine:.0e}" if 0.999999 <= cosine < 1 else f"{cosine:.6f}"
    if agreement.get("max_prob_diff") is not None:
        text += f"; probabilities within {agreement['max_prob_diff']:.1e}"
    return text


def variants_table(result: dict, concurrency: int, runs_key: str = "runs", server: str = "the server") -> list[str]:
    """One row per raw variant: its limit at its best batch size (median over
    rounds), against the reference, its agreement with float32 torch, and the
    server at ``concurrency`` as a share of it (per round)."""
    reference = _reference(result)
    rounds = result["rounds"]
    median = statistics.median
    texts = next(iter(result["raw"].values())).get("agreement", {}).get("texts", "the")
    lines = [
        f"| raw variant | best batch | items/s (median over rounds) | vs {_variant_label(result['raw'][reference])} "
        f"| min cosine vs float32 torch ({texts} texts) | {server} at c={concurrency} as a share of it (per round) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for variant, raw in result["raw"].items():
        limits = [r["limits"][variant] for r in rounds]
        ratios = [r[runs_key][str(concurrency)]["rps"] / r["limits"][variant] for r in rounds]
        versus = median([r["limits"][variant] / r["limits"][reference] for r in rounds])
        lines.append(f"| {_variant_label(raw)} | {raw['best_batch']} | {median(limits):.1f} | {versus:.2f}x | "
                     f"{_agreement(raw)} | **{median(ratios):.1%}** ({', '.join(f'{x:.0%}' for x in ratios)}) |")
    return lines


def _raw_line(result: dict) -> str:
    parts = []
    reference = _reference(result)
    for dtype, raw in result["raw"].items():
        label = _variant_label(raw) + (", the reference" if dtype == reference and len(result["raw"]) > 1 else "")
        limits = ", ".join(f"{r['limits'][dtype]:.1f}" for r in result["rounds"])
        parts.append(f"Raw `pipeline(texts, batch_size=b)` sweep ({label}; best of two passes): "
                     + ", ".join(f"b={b}: {v:.1f}/s" for b, v in raw["sweep"].items())
                     + f". Limit at b={raw['best_batch']} per round: {limits} items/s.")
    singles = [statistics.median(x["c1_raw_ms"]) for x in result["rounds"] if x["c1_raw_ms"]]
    if singles:
        parts.append("One `pipeline(text)` call, p50 per round: " + ", ".join(f"{v:.2f}" for v in singles) + " ms.")
    flags = result["server_args"]
    parts.append(f"Server flags: `{' '.join(flags)}`." if flags else "Server flags: defaults.")
    return " ".join(parts)


def throughput_body(doc: dict) -> str:
    o = doc["options"]
    concurrency = o["concurrency"]
    where = ("no GPU. " if o["raw_device"] == "cpu" else f"raw pipeline on {o['raw_device']} (server flags below). ")
    lines = [
        f"`{doc['command']}` on {doc['date']}: {machine(doc)}, {where}Server, load generator (bench.loadgen, in its own "
        "process) and the raw pipeline process share these cores. The box is noisy (the "
        "raw limit alone moves by ±15% between runs), so the measurements alternate: "
        f"{o['rounds']} rounds, each taking the raw limit, then the server at each concurrency, then concurrency 1 "
        "side by side with single raw `pipeline(text)` calls; every ratio pairs a server figure with the raw figure "
        "of its own round, and the tables give medians over rounds.",
        "",
        "Server flags: the defaults (`--max-batch-size 32`, adaptive wait) plus any below, whatever batch size the "
        f"raw pipeline does best at; closed-loop load, {o['seconds']:g} s per measurement (x3 for bert-base, whose "
        f"batches of 32 take over a second) after {o['warmup']:g} s warm-up; single-input JSON requests. Requests/s "
        "count the answers between the ends of whole answer bursts (a batch's answers arrive together; a fixed "
        "window would cut a burst at each end, +-1 batch, 7% for bert-base), as the raw limit times whole batches.",
        "",
        "*p50 − raw call* (concurrency 1 only): closed loops side by side, a block of back-to-back raw calls "
        "(timed inside the raw process) then a block of back-to-back requests over one keep-alive connection, "
        "alternating within each round; the median of the blocks' differences, with a bootstrap 95% interval "
        "(it treats blocks as independent, which neighbours sharing the box's drift are not: a lower bound on the "
        "uncertainty). A raw p50 taken once per round and set against the load generator's p50 would let the "
        "box's drift land in the difference whole.",
        "",
    ]
    for r in doc["results"]["models"]:
        c1_raw = [v for x in r["rounds"] for v in x["c1_raw_ms"]]
        c1_server = [v for x in r["rounds"] for v in x["c1_server_ms"]]
        c1 = summarize_blocks(c1_raw, c1_server) if c1_raw else None
        lines += [
            f"## {r['title']}",
            "",
            _raw_line(r),
            "",
            "| concurrency | requests/s | ratio to limit (per round) | p50 ms | p99 ms "
            "| p50 − raw call ms, side by side | mean batch | non-200 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in concurrency:
            s = _summarize(r, c)
            per_round = ", ".join(f"{x:.0%}" for x in s["ratios"])
            versus_raw = interval(c1) if c == 1 and c1 else "–"
            lines.append(f"| {c} | {s['rps']:.1f} | **{s['ratio']:.1%}** ({per_round}) | {s['p50_ms']:.2f} | "
                         f"{s['p99_ms']:.2f} | {versus_raw} | {s['mean_batch']:.1f} | {s['non_200']} |")
        if c1:
            blocks, calls = r["c1_blocks"]
            lines += [
                "",
                f"Concurrency 1 side by side: {len(c1_raw)} pairs of blocks ({blocks} a round; raw blocks of {calls} "
                f"calls, server blocks through {r['c1_client']}): server p50 {c1['block_server_p50']:.2f} ms vs "
                f"raw call {c1['block_raw_p50']:.2f} ms (medians over blocks); median difference per round: "
                + ", ".join(f"{median_difference(x['c1_server_ms'], x['c1_raw_ms']):+.2f}" for x in r["rounds"])
                + " ms.",
            ]
        if len(r["raw"]) > 1:
            lines += ["", "Raw variants (each its own helper, swept and timed every round):", "",
                      *variants_table(r, max(concurrency))]
        top = _summarize(r, max(concurrency))
        lines += [
            "",
            f"While saturated at concurrency {max(concurrency)}: `GET /health` p99 "
            f"**{top['health_p99_ms']:.2f} ms** (worst round; a sequential probe in its own process, every 20 ms, "
            f"in a saturated window of its own after the throughput runs, where the server did "
            f"{top['rps_while_probed']:.1f} req/s); "
            f"front-end RSS **{top['front_end_rss_mb']:.0f} MB** (it never imports torch).",
            "",
        ]
    return "\n".join(lines)


def render_gpu(doc: dict) -> str:
    r = doc["results"]
    return (f"# GPU benchmark: {r['card']}\n\n(`python -m bench gpu`: server and raw pipeline both on {r['device']} "
            f"in {r['dtype']})\n\n" + throughput_body(doc))


def _chosen(info: dict) -> str:
    """What a server runs, from its /info: engine, dtype, and --dtype's reason."""
    precision = info.get("precision") or {}
    text = f"{info.get('engine')}, {info.get('dtype')}"
    if precision.get("reason"):
        text += f": {precision['reason']}"
    return text


def _flagged(values: list[str], rounds: list[dict]) -> str:
    """Per-round figures, those of flagged rounds (others used the CPU) in brackets."""
    return ", ".join(v if x.get("clean", True) else f"[{v}]" for v, x in zip(values, rounds))


def _precision_model(r: dict) -> list[str]:
    reference = r["reference"]
    every = r["rounds"]
    # Medians over the rounds nobody else's processes disturbed (all, if none was spared).
    rounds = [x for x in every if x.get("clean", True)] or every
    c = str(r["concurrency"])
    median = statistics.median
    texts = next(iter(r["raw"].values()))["agreement"]["texts"]
    lines = [
        f"### {r['title']}",
        "",
        f"Servers at concurrency {c} (closed loop, `{r['route']}`), each as a share of the raw "
        f"{_variant_label(r['raw'][reference])} limit of its own round:",
        "",
        "| server flags | serves with | requests/s | share of the reference limit (per round) | p50 ms | p99 ms "
        "| mean batch | non-200 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for server in r["servers"]:
        runs = [x["runs"][server][c] for x in rounds]
        ratios = [x["runs"][server][c]["rps"] / x["limits"][reference] for x in rounds]
        every_ratio = [f"{x['runs'][server][c]['rps'] / x['limits'][reference]:.0%}" for x in every]
        bad = sum(sum(v for k, v in x["statuses"].items() if str(k) != "200") for x in runs)
        info = r["info"][server]
        lines.append(f"| `{server}` | {info.get('engine')}, {info.get('dtype')} | "
                     f"{median([x['rps'] for x in runs]):.1f} | **{median(ratios):.1%}** "
                     f"({_flagged(every_ratio, every)}) | {median([x['p50_ms'] for x in runs]):.1f} | "
                     f"{median([x['p99_ms'] for x in runs]):.1f} | {median([x['mean_batch'] for x in runs]):.1f} | "
                     f"{bad} |")
    lines += [
        "",
        "Raw variants (each its own helper process, swept for its best batch size, then timed every round):",
        "",
        f"| raw variant | sweep, items/s by batch size | best batch | items/s (median over rounds) "
        f"| vs {_variant_label(r['raw'][reference])} | min cosine vs float32 torch ({texts} texts) | "
        + " | ".join(f"`{s}` at c={c} as a share of it" for s in r["servers"]) + " |",
        "|---|---|---:|---:|---:|---|" + "---:|" * len(r["servers"]),
    ]
    for variant, raw in r["raw"].items():
        limits = [x["limits"][variant] for x in rounds]
        versus = median([x["limits"][variant] / x["limits"][reference] for x in rounds])
        shares = [median([x["runs"][s][c]["rps"] / x["limits"][variant] for x in rounds]) for s in r["servers"]]
        sweep = ", ".join(f"{b}: {v:.1f}" for b, v in raw["sweep"].items())
        lines.append(f"| {_variant_label(raw)} | {sweep} | {raw['best_batch']} | {median(limits):.1f} | "
                     f"{versus:.2f}x | {_agreement(raw)} | " + " | ".join(f"{x:.1%}" for x in shares) + " |")
    lines += ["", "Load average (1, 5, 15 min) at the start of each round: "
              + "; ".join(", ".join(f"{v:.2f}" for v in x["load_average"]) for x in every) + "."]
    if any("foreign_cores" in x for x in every):
        flagged = sum(not x.get("clean", True) for x in every)
        lines[-1] += (" Cores used by processes outside this run during each round: "
                      + _flagged([f"{x['foreign_cores']:.2f}" for x in every], every)
                      + (f" (in brackets: {flagged} round(s) flagged and left out of the medians)." if flagged
                         else "."))
        limit = r.get("foreign_max") or float("inf")
        sweeps = [(_variant_label(raw), raw["sweep_foreign_cores"]) for raw in r["raw"].values()
                  if "sweep_foreign_cores" in raw]
        if sweeps:
            lines[-1] += (" During the sweeps: " + ", ".join(f"{name} {v:.2f}" if v < limit else f"{name} [{v:.2f}]"
                                                             for name, v in sweeps) + "."
                          + (" (A disturbed sweep, in brackets, only chose the batch size the rounds then use.)"
                             if any(v >= limit for _, v in sweeps) else ""))
    lines.append("")
    return lines


def _load_average(poll: dict | list) -> list:
    """A quiet-box poll's load averages (runs before the shared wait stored the bare list)."""
    return poll["load_average"] if isinstance(poll, dict) else poll


def render_precision(doc: dict) -> str:
    r, o = doc["results"], doc["options"]
    quiet = r["quiet"]
    infos = {s: i for m in r["models"] for s, i in m["info"].items()}
    if r.get("c1"):
        infos.update(r["c1"]["info"])
    if not quiet["threshold"]:
        waited = "no wait asked for"
    elif quiet["quiet"]:
        waited = f"under {quiet['threshold']:g} after {quiet['waited_s']} s of waiting"
    else:
        waited = f"never under {quiet['threshold']:g} in {quiet['waited_s']} s of waiting: measured anyway"
    others = (f" Waits for other processes to go quiet took {r['waited_for_others_s']} s in all."
              if "waited_for_others_s" in r else "")
    lines = [
        heading("Precision and engines", doc, "utc")
        + f"{machine(doc)}, no GPU; torch {doc['machine']['torch']}, transformers {doc['machine']['transformers']}. "
        f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in _load_average(quiet['polls'][-1]))} ({waited}); "
        f"after: {', '.join(f'{v:.2f}' for v in r['load_average_after'])}.{others} The run took "
        f"{doc['seconds'] / 60:.1f} min. "
        + (f"{o['rounds']} rounds of {o['seconds']:g} s (x3 for bert-base) after {o['warmup']:g} s warm-up; raw "
           f"sweeps {o['sweep_seconds']:g} s per batch size, best of two passes. Server, load generator and raw "
           "helpers share the cores; each ratio pairs a server figure with the raw limits of its own round, and "
           "the tables give medians over rounds. " if r["models"] else "Servers, client and raw helpers share "
           "the cores. ")
        + "ONNX variants run inferserve.model.engines.onnx_model, the server's own export (cached) and session; "
        "OpenVINO variants inferserve.model.openvino_engine.openvino_models, the server's own conversion (cached), "
        "compiled with the precision hint the dtype names (float32: f32, bfloat16: bf16)."
        + (" Agreement: per text, the cosine of its outputs (the network's last hidden state or logits over its "
           "real tokens; for `/embed`, the pooled vector) against a float32 torch copy's, minimum over the texts; "
           "for fill-mask also the largest change of any softmax probability." if r["models"] else ""),
        "",
        "What each server serves with (its `/info`: engine, dtype, and why):",
        "",
        *[f"- `{s}`: {_chosen(i)}" for s, i in infos.items()],
        "",
    ]
    for m in r["models"]:
        lines += _precision_model({"foreign_max": o.get("foreign_max"), **m})
    c1 = r.get("c1")
    if c1:
        lines += [
            f"### Concurrency 1: {c1['title']}",
            "",
            f"Each server and each raw variant's single call (those named in the table) in turn, a block at a time "
            f"({c1['blocks']} blocks of "
            f"each, the order mirrored every other block; server blocks through {c1['client']}, raw blocks of "
            f"{c1['raw_calls']} calls timed inside the raw process). Ratio: a block's p50 over the `{c1['baseline']}` "
            f"block beside it, median over blocks; difference: minus the `{c1['raw_reference']}` block beside it. In "
            "brackets a bootstrap 95% interval (blocks treated as independent: a lower bound on the uncertainty). "
            "Load average before and after: "
            + "; ".join(", ".join(f"{v:.2f}" for v in x) for x in c1["load_average"]) + "."
            + (f" Cycles (a block of each side) kept: {c1['kept']} of {len(c1['cycles'])}; cores used by processes "
               "outside this run during each: " + _flagged([f"{x['foreign_cores']:.2f}" for x in c1["cycles"]],
                                                           c1["cycles"])
               + (" (in brackets: left out)." if c1["kept"] < len(c1["cycles"]) else ".")
               if c1.get("cycles") else ""),
            "",
            f"| side | p50 ms (median over blocks) | p50 / `{c1['baseline']}` | minus {c1['raw_reference']} ms |",
            "|---|---:|---:|---:|",
        ]
        for name, s in c1["summary"].items():
            low, high = s["ratio_ci95"]
            side = name if name.startswith("raw ") else f"server `{name}`"
            versus_raw = (f"{s['minus_raw_ms']:+.2f} [{s['minus_raw_ci95'][0]:+.2f}, {s['minus_raw_ci95'][1]:+.2f}]"
                          if "minus_raw_ms" in s else "–")
            lines.append(f"| {side} | {s['p50_ms']:.2f} | **{s['ratio_to_baseline']:.3f}** [{low:.3f}, {high:.3f}] "
                         f"| {versus_raw} |")
    return "\n".join(lines)
