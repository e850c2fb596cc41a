"""/metrics, /info, timing headers, JSON logs: a real server on 127.0.0.1.

(Counting by route and status is the front-end's alone: test_app_metrics.py covers it.)"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import aiohttp
import pytest

from helpers import ServerProcess, scrape, start_together, stop_all, wait_until

MAX_BATCH = 4


TOKEN_BUDGET = 64


@pytest.fixture(scope="module")
def servers(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    logs, model = tmp_path_factory.mktemp("logs"), ["--model", str(fill_mask_model)]
    started = start_together([
        ServerProcess([*model, "--max-batch-size", str(MAX_BATCH), "--max-batch-delay-ms", "15", "--max-queue", "77",
                       "--request-timeout", "12", "--log-format", "json"], logs / "observed.log"),
        ServerProcess([*model, "--max-batch-size", "16", "--max-batch-tokens", str(TOKEN_BUDGET),
                       "--max-batch-delay-ms", "100", "--batch-wait", "fixed"], logs / "token-budget.log"),
    ])
    yield started
    stop_all(started)


@pytest.fixture(scope="module")
def observed_server(servers: list[ServerProcess]) -> ServerProcess:
    return servers[0]


async def _post_many(url: str, count: int) -> list[tuple[int, dict[str, str], float]]:
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> tuple[int, dict[str, str], float]:
            started = time.monotonic()
            async with session.post(url, json={"inputs": f"metric {i} [MASK]"}) as resp:
                await resp.read()
                return resp.status, resp.headers.copy(), (time.monotonic() - started) * 1000

        return await asyncio.gather(*(one(i) for i in range(count)))


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_metrics_move_by_the_right_amounts(observed_server: ServerProcess) -> None:
    before = scrape(observed_server)
    results = asyncio.run(_post_many(observed_server.url + "/", 20))
    assert all(status == 200 for status, _, _ in results)
    after = scrape(observed_server)

    assert delta(after, before, 'inferserve_requests_total{route="/",status="200"}') == 20
    assert delta(after, before, 'inferserve_request_duration_seconds_count{route="/"}') == 20
    assert delta(after, before, "inferserve_items_computed_total") == 20
    assert delta(after, before, "inferserve_batch_size_sum") == 20
    batches = delta(after, before, "inferserve_batch_size_count")
    # one batch-size observation per batch the worker reported, each also timed
    assert batches == delta(after, before, "inferserve_batch_compute_seconds_count")
    assert math.ceil(20 / MAX_BATCH) <= batches <= 20
    assert delta(after, before, "inferserve_queue_wait_seconds_count") == 20
    # Padding efficiency's two counters: the inputs' own tokens, and what was padded.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(observed_server.args[observed_server.args.index("--model") + 1])
    own = sum(len(tokenizer(f"metric {i} [MASK]")["input_ids"]) for i in range(20))
    assert delta(after, before, "inferserve_tokens_real_total") == own
    padded = delta(after, before, "inferserve_tokens_padded_total")
    assert padded == delta(after, before, "inferserve_batch_padded_tokens_sum") >= own
    assert after["inferserve_worker_up"] == 1
    assert after["inferserve_queue_depth"] == 0
    assert after["inferserve_worker_restarts_total"] == 0


def test_info_matches_the_flags(observed_server: ServerProcess, fill_mask_model: Path) -> None:
    info = observed_server.get("/info").json()
    assert info["model_id"] == str(fill_mask_model) and info["served_model_name"] == fill_mask_model.name
    assert info["task"] == "fill-mask"
    assert info["device"] == "cpu"
    assert info["model_dtype"] == "float32"
    assert info["max_batch_size"] == MAX_BATCH
    assert info["max_batch_delay_ms"] == 15
    assert info["max_concurrent_requests"] == 77
    assert info["request_timeout_s"] == 12
    assert set(info["versions"]) >= {"inferserve", "torch", "transformers"}
    assert info["versions"]["torch"].startswith("2.")
    assert info["uptime_s"] > 0
    cost = info["cost_model"]  # timed at warm-up (model/cost_model.py)
    assert cost["measured"] and cost["samples"] >= 6
    assert min(cost["fixed_ms"], cost["per_token_ms"], cost["per_token_squared_ms"]) >= 0
    assert cost["fixed_ms"] + cost["per_token_ms"] > 0


def test_timing_headers_are_consistent(observed_server: ServerProcess) -> None:
    for status, headers, total_ms in asyncio.run(_post_many(observed_server.url + "/", 12)):
        assert status == 200
        queue_ms = float(headers["X-Queue-Time-Ms"])
        compute_ms = float(headers["X-Compute-Time-Ms"])
        assert queue_ms >= 0 and compute_ms > 0
        assert queue_ms + compute_ms <= total_ms
        assert 1 <= int(headers["X-Batch-Size"]) <= MAX_BATCH
        assert headers["X-Request-Id"]


def test_json_logs_have_one_object_per_request(observed_server: ServerProcess) -> None:
    response = observed_server.post_json({"inputs": "log me [MASK]"}, headers={"X-Request-Id": "log-check-1"})
    assert response.status == 200

    def records() -> list[dict]:
        lines = observed_server.log().splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("\n")]  # whole lines

    # access lines reach the log up to 50 ms late (written off the loop)
    wait_until(lambda: any(r.get("request_id") == "log-check-1" for r in records()), timeout=5, what="access line")
    access = [r for r in records() if r.get("request_id") == "log-check-1"]
    assert len(access) == 1
    assert access[0]["status"] == 200 and access[0]["path"] == "/"
    assert access[0]["batch_size"] >= 1 and access[0]["latency_ms"] > 0
    # start-up steps are logged with their durations
    messages = " ".join(r["message"] for r in records())
    assert "loaded" in messages and "warm-up" in messages


def test_token_budget_bounds_every_batch(servers: list[ServerProcess]) -> None:
    budget, server = TOKEN_BUDGET, servers[1]
    long_text = "a rather long input sentence " * 5 + "[MASK]"  # ~30 tokens
    texts = [long_text if i % 3 == 0 else f"short {i} [MASK]" for i in range(24)]

    async def run():
        async with aiohttp.ClientSession() as session:
            async def one(text: str):
                async with session.post(server.url + "/", json={"inputs": text}) as resp:
                    return resp.status, int(resp.headers["X-Batch-Size"])
            return await asyncio.gather(*(one(t) for t in texts))

    results = asyncio.run(run())
    assert all(status == 200 for status, _ in results)
    samples = scrape(server)
    batches = samples["inferserve_batch_padded_tokens_count"]
    assert samples[f'inferserve_batch_padded_tokens_bucket{{le="{budget}.0"}}'] == batches  # none over budget
    assert max(size for _, size in results) > 2  # short inputs still batch several at a time


def test_compute_time_counts_a_batch_once_for_a_list_request(observed_server: ServerProcess) -> None:
    texts = [f"list item {i} [MASK]" for i in range(MAX_BATCH)]
    before = scrape(observed_server)["inferserve_batch_compute_seconds_sum"]
    started = time.monotonic()
    response = observed_server.post_json({"inputs": texts})
    total_ms = (time.monotonic() - started) * 1000
    after = scrape(observed_server)["inferserve_batch_compute_seconds_sum"]
    assert response.status == 200
    compute_ms = float(response.headers["X-Compute-Time-Ms"])
    # the header is the model time of this request's batches, each counted
    # once, not once per input they held
    assert compute_ms == pytest.approx((after - before) * 1000, abs=0.01)
    assert float(response.headers["X-Queue-Time-Ms"]) + compute_ms <= total_ms
