"""The passages, mixed and rerank-mixed sections of bench/RESULTS.md."""

from __future__ import annotations

import statistics

from bench.markdown import heading, machine


def _median(values) -> float:
    return statistics.median(list(values))


def _cpu(doc: dict) -> str:
    name = doc["results"].get("cpu")
    return f"{machine(doc)}, {name}" if name and not doc["machine"].get("cpu") else machine(doc)


def _cost(model: dict) -> str:
    cost = model.get("cost_model") or {}
    if not cost:
        return "no cost model reported"
    return (f"cost model {cost['fixed_ms']:.2f} ms + {cost['per_token_ms']:.4f} ms x n*L "
            f"+ {cost['per_token_squared_ms']:.2e} ms x n*L^2"
            + ("" if cost.get("measured") else " (default, not measured)"))


def _raw_rows(rounds: list[dict], batch: int, blanks: int) -> list[str]:
    """The table rows of both raw limits (medians over rounds): rate, share
    of the length-sorted one, ``blanks`` empty cells, padding efficiency,
    batch."""
    sorted_rate = _median(r["limits"]["length"]["items_s"] for r in rounds)
    rows = []
    for order, label in (("arrival", "raw, arrival order"), ("length", "raw, sorted by length")):
        rate = _median(r["limits"][order]["items_s"] for r in rounds)
        eff = _median(r["limits"][order]["padding_efficiency"] for r in rounds)
        rows.append(f"| {label}, batches of {batch} | {rate:.1f} | {rate / sorted_rate:.0%} | " + "| " * blanks
                    + f"{eff:.2f} | {batch} |")
    return rows


def _window_cells(runs: list[dict]) -> str:
    """p50, p99, padding efficiency and mean batch of a server's windows (medians)."""
    eff = [x["padding_efficiency"] for x in runs if x["padding_efficiency"] is not None]
    size = [x["mean_batch_size"] for x in runs if x["mean_batch_size"] is not None]
    return (f"{_median(x['p50_ms'] for x in runs):.0f} | {_median(x['p99_ms'] for x in runs):.0f} | "
            f"{_median(eff) if eff else float('nan'):.2f} | {_median(size) if size else 0:.1f} |")


def render_passages(doc: dict) -> str:
    lines = [heading("Mixed-length passages", doc).rstrip("\n"), "",
             f"{_cpu(doc)}; medians over {doc['options']['rounds']} round(s); every server figure is set "
             "against the raw limits taken just before it, in the server's own precision and engine.", ""]
    for model in doc["results"]["models"]:
        rounds = model["rounds"]
        lines += [f"### {model['title']}", "",
                  f"{model['count']} passages of {model['words'][0]}-{model['words'][1]} words, one per request; "
                  f"server {model['dtype']} on {model['engine']}"
                  + (f" with `{model['server_args']}`" if model["server_args"] else "") + f"; {_cost(model)}.", "",
                  "| | items/s | of sorted limit | p50 ms | p99 ms | padding efficiency | mean batch |",
                  "|---|---|---|---|---|---|---|"]
        lines += _raw_rows(rounds, model["batch"], 2)
        for c, ratio in model["summary"]["ratio_to_sorted"].items():
            lines.append(f"| server, concurrency {c} | {model['summary']['median_rps'][c]:.1f} | **{ratio:.0%}** | "
                         + _window_cells([r["runs"][c] for r in rounds]))
        rises = model["summary"]["rises_with_concurrency"]
        lines += ["", "Higher concurrency " + ("never slower" if rises else "**slower** somewhere") + ".", ""]
    return "\n".join(lines)


def render_mixed(doc: dict) -> str:
    result = doc["results"]
    rounds = result["rounds"]
    batch_ms = _median(r["passage_batch_ms"] for r in rounds)
    lines = [heading("Queries beside passages", doc).rstrip("\n"), "",
             f"{_cpu(doc)}; {result['title']}; concurrency {result['concurrency']}: "
             f"{result['clients']['queries']} clients sending ~10-word queries, {result['clients']['passages']} "
             f"sending {result['words'][0]}-{result['words'][1]}-word passages; server {result['dtype']} on {result['engine']}; {_cost(result)}. "
             f"One length-sorted batch of {result['batch']} passages in the raw helper: {batch_ms:.0f} ms.", "",
             "| | items/s | p50 ms | p99 ms | p99 / one passage batch |", "|---|---|---|---|---|"]
    for kind in ("queries", "passages"):
        runs = [r["runs"][kind] for r in rounds]
        p99 = _median(x["p99_ms"] for x in runs)
        lines.append(f"| {kind} | {_median(x['rps'] for x in runs):.1f} | {_median(x['p50_ms'] for x in runs):.0f} | "
                     f"{p99:.0f} | {p99 / batch_ms:.2f} |")
    summary = result["summary"]
    lines += ["", f"Goal: the queries' p99 at most {summary['goal']:g} passage batches: "
              f"**{summary['query_p99_in_passage_batches']:.2f}, " + ("met" if summary["met"] else "not met") + "**.",
              ""]
    return "\n".join(lines)


def render_rerank_mixed(doc: dict) -> str:
    result = doc["results"]
    rounds, info, summary, batch = result["rounds"], result["info"], result["summary"], result["batch"]
    lines = [heading("Rerank, mixed-length documents", doc).rstrip("\n"), "",
             f"{_cpu(doc)}; medians over {len(rounds)} round(s). The rerank scenario's cross-encoder "
             f"(all-MiniLM-L6-v2's encoder, seeded random one-logit head) served with "
             f"`{' '.join(result['server_args'])}`: {info['dtype']} on {info['engine']}, max batch "
             f"{info['max_batch_size']}; {_cost(info)}. `POST /rerank` with one ~10-word query and "
             f"{result['docs']} documents of {result['words'][0]}-{result['words'][1]} words ({result['count']} "
             "distinct, cut from the standard library's docstrings). Raw limits: `python -m bench.rerank_raw` "
             f"in the server's precision ({result['raw_loaded']['dtype']}), {result['raw_loaded']['threads']} "
             f"torch threads, over the first {4 * batch} pairs of the request stream in batches of {batch}, as "
             "they come and sorted by token count, taken just before each round's server runs. Server scores vs "
             f"raw over {result['check']['pairs']} pairs: max |diff| {result['check']['max_abs_diff']:.1e}.", "",
             "| | pairs/s | of sorted limit | pairs/s computed | computed of sorted | p50 ms | p99 ms "
             "| padding efficiency | mean batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += _raw_rows(rounds, batch, 4)
    for c, ratio in summary["ratio_to_sorted"].items():
        runs = [r["runs"][c] for r in rounds]
        lines.append(f"| server, concurrency {c} | {summary['median_pairs_s'][c]:.1f} | **{ratio:.0%}** | "
                     f"{_median(x['server_side']['pairs_per_s'] for x in runs):.1f} | "
                     f"{summary['computed_ratio_to_sorted'][c]:.0%} | " + _window_cells(runs))
    goal = summary["goal"]
    foreign = [r["foreign_cores_raw"] for r in rounds]
    foreign += [x["foreign_cores"] for r in rounds for x in r["runs"].values()]
    lines += ["", "*Pairs/s*: answered requests/s x documents; *computed*: the server's own count of pairs through "
              "the model (`/metrics`) over the same window, steadier (a request is answered with its last pair). "
              f"Cores used by processes outside this run, per raw limit and server run: at most {max(foreign):.2f}.",
              "", f"Goal (issue 27): at concurrency {goal['concurrency']}, at least {goal['target']:.0%} of the "
              f"length-sorted raw limit: **{goal['ratio']:.0%}, " + ("met" if goal["met"] else "not met") + "**. "
              "Higher concurrency " + ("never slower" if summary["rises_with_concurrency"] else "**slower** somewhere")
              + ".", ""]
    return "\n".join(lines)
