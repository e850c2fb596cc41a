"""What the passages and mixed scenarios share: the server started first
(its /info says which precision and engine it chose), a raw helper of that
same precision and engine, the raw limits of arrival-order and
length-sorted batches, and the server's padding efficiency and batch time
read from /metrics around each load window."""

from __future__ import annotations

import json
import urllib.request
from contextlib import ExitStack

from bench.harness import OUT, Model, RawHelper, Server, require_loopback, start_inferserve

# The counters read around a window (sums over every label set).
_COUNTERS = ("inferserve_tokens_real_total", "inferserve_tokens_padded_total",
             "inferserve_batch_compute_seconds_sum", "inferserve_batch_compute_seconds_count",
             "inferserve_items_computed_total")


def get_json(url: str):
    require_loopback(url)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def counters(server: Server) -> dict[str, float]:
    """This server's counters above, each summed over its label sets."""
    url = server.url("/metrics")
    require_loopback(url)
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals = dict.fromkeys(_COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def window_figures(before: dict[str, float], after: dict[str, float]) -> dict:
    """Padding efficiency (real / padded tokens) and mean batch over a window."""
    d = {k: after[k] - before[k] for k in _COUNTERS}
    batches = d["inferserve_batch_compute_seconds_count"]
    return {
        "padding_efficiency": d["inferserve_tokens_real_total"] / d["inferserve_tokens_padded_total"]
        if d["inferserve_tokens_padded_total"] else None,
        "mean_batch_ms": 1000 * d["inferserve_batch_compute_seconds_sum"] / batches if batches else None,
        "mean_batch_size": d["inferserve_items_computed_total"] / batches if batches else None,
    }


def open_server_and_raw(stack: ExitStack, model: Model, path: str, texts: list[str], server_args: list[str],
                        label: str, device: str = "cpu") -> tuple[Server, RawHelper, dict]:
    """The server with its defaults plus ``server_args``, then a raw helper
    in the precision and engine the server chose (from its /info)."""
    server = stack.enter_context(start_inferserve(path, model.task, server_args, OUT / f"{label}-server.log"))
    info = get_json(server.url("/info"))
    dtype = info.get("dtype") or info.get("model_dtype") or "auto"  # model_dtype: TEI's name, where /info uses it
    engine = info.get("engine") or "torch"
    print(f"[{label}] server: {dtype} on {engine}; cost model {info.get('cost_model')}", flush=True)
    raw = stack.enter_context(RawHelper(model, path, texts, device, dtype, engine))
    return server, raw, {"dtype": dtype, "engine": engine, "cost_model": info.get("cost_model"),
                         "raw_dtype": raw.loaded["dtype"]}


def raw_limits(raw: RawHelper, batch: int, seconds: float) -> dict[str, dict]:
    """Arrival-order and length-sorted batches of ``batch``, back to back."""
    return {order: raw.ask(f"ordered {batch} {seconds} {order}") for order in ("arrival", "length")}
