"""The Prometheus metrics the front-end keeps."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app_harness import (
    FORM, JSON, eventually, FakeBackend, fetch, make_app, one, scrape, serve,
)
from helpers import metric_samples
from inferserve.frontend.state import METRICS_KEY
from inferserve.ipc import BatchReport


# ---- metrics ------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status() -> None:
    app, _ = make_app(max_inputs=2)

    async def scenario(client: TestClient) -> tuple[dict[str, float], dict[str, float]]:
        before = await scrape(client)
        for request in [
            ("POST", "/", {"data": b"a", "headers": FORM}),
            ("POST", "/", {"data": b"b", "headers": FORM}),
            ("POST", "/", {"data": b"{", "headers": JSON}),
            ("POST", "/", {"data": orjson.dumps({"inputs": ["a"] * 3}), "headers": JSON}),
            ("POST", "/embed", {"data": b"x", "headers": FORM}),
            ("GET", "/health", {}),
            ("GET", "/nope", {}),
        ]:
            await fetch(client, request[0], request[1], **request[2])
        return before, await scrape(client)

    before, after = serve(app, scenario)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('inferserve_requests_total{route="/",status="200"}') == 2
    assert delta('inferserve_requests_total{route="/",status="400"}') == 1
    assert delta('inferserve_requests_total{route="/",status="413"}') == 1
    assert delta('inferserve_requests_total{route="/embed",status="415"}') == 1
    assert delta('inferserve_requests_total{route="/health",status="200"}') == 1
    assert delta('inferserve_requests_total{route="unmatched",status="404"}') == 1
    # the first scrape is counted by the time of the second
    assert after['inferserve_requests_total{route="/metrics",status="200"}'] == 1
    assert delta('inferserve_request_duration_seconds_count{route="/"}') == 4
    assert delta("inferserve_queue_wait_seconds_count") == 2  # one per answer the worker gave
    assert delta("inferserve_queue_wait_seconds_sum") == pytest.approx(2 * 0.00125)


def test_a_handler_failure_and_an_auth_failure_are_counted_with_their_status() -> None:
    app, _ = make_app(FakeBackend(answer=RuntimeError("bug")), api_key="k")

    async def scenario(client: TestClient) -> dict[str, float]:
        auth = {"Authorization": "Bearer k"}
        await fetch(client, "POST", "/", data=b"a", headers={**FORM, **auth})
        await fetch(client, "POST", "/", data=b"a", headers=FORM)
        return metric_samples((await fetch(client, "GET", "/metrics", headers=auth)).body.decode())

    samples = serve(app, scenario)
    assert samples['inferserve_requests_total{route="/",status="500"}'] == 1
    assert samples['inferserve_requests_total{route="/",status="401"}'] == 1


def test_queue_depth_and_worker_up_read_the_backend_at_scrape_time() -> None:
    backend = FakeBackend()
    app, _ = make_app(backend)

    async def scenario(client: TestClient) -> list[tuple[float, float]]:
        seen = []
        for in_flight, ready in [(0, True), (5, True), (2, False)]:
            backend.in_flight, backend.ready = in_flight, ready
            samples = await scrape(client)
            seen.append((samples["inferserve_queue_depth"], samples["inferserve_worker_up"]))
        return seen

    assert serve(app, scenario) == [(0, 1), (5, 1), (2, 0)]


def test_in_flight_gauge_counts_requests_being_handled() -> None:
    backend = FakeBackend(hold=asyncio.Event())
    app, _ = make_app(backend)

    async def scenario(client: TestClient) -> tuple[float, float]:
        held = asyncio.create_task(fetch(client, "POST", "/", data=b"a", headers=FORM))
        await eventually(lambda: backend.in_flight == 1)
        during = (await scrape(client))["inferserve_in_flight_requests"]
        backend.hold.set()
        await held
        return during, (await scrape(client))["inferserve_in_flight_requests"]

    during, after = serve(app, scenario)
    assert (during, after) == (2, 1)  # the held request and the scrape itself; then the scrape alone


def test_batch_reports_restarts_answers_and_retries_are_recorded_via_the_metrics_object() -> None:
    app, _ = make_app()
    metrics = app[METRICS_KEY]
    metrics.observe_batch(BatchReport(size=3, padded_tokens=30, compute_ms=12.0, tokens=21), "fake")
    metrics.observe_batch(BatchReport(size=1, padded_tokens=5, compute_ms=2.0, tokens=5), "fake")
    metrics.observe_answer(0, "fake")
    metrics.observe_answer(1, "fake")
    metrics.observe_answer(1, "fake")
    metrics.observe_restart("fake")
    metrics.observe_retry("fake")
    samples = serve(app, scrape)
    assert samples["inferserve_batch_size_count"] == 2
    assert samples["inferserve_batch_size_sum"] == 4
    assert samples['inferserve_batch_size_bucket{le="1.0"}'] == 1
    assert samples["inferserve_items_computed_total"] == 4
    assert samples["inferserve_batch_padded_tokens_sum"] == 35
    # Padding efficiency: real over padded tokens, 26 / 35 here.
    assert samples["inferserve_tokens_real_total"] == 26
    assert samples["inferserve_tokens_padded_total"] == 35
    assert samples["inferserve_batch_compute_seconds_count"] == 2
    assert samples["inferserve_batch_compute_seconds_sum"] == pytest.approx(0.014)
    assert samples['inferserve_worker_answers_total{model="fake",worker="0"}'] == 1
    assert samples['inferserve_worker_answers_total{worker="1"}'] == 2
    assert samples["inferserve_worker_restarts_total"] == 1
    assert samples["inferserve_request_retries_total"] == 1


def test_metrics_content_type_is_prometheus_text() -> None:
    reply, _ = one("GET", "/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_the_design_docs_metric_list_is_the_registry_without_created_series() -> None:
    """docs/design.md#observability names every series /metrics exposes, and no other;
    prometheus-client's ``_created`` twins are not exposed."""
    import re

    from helpers import REPO_ROOT

    design = (REPO_ROOT / "docs" / "design.md").read_text()
    section = design.split("## Observability", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(inferserve_[a-z_]+)", section))
    app, _ = make_app()

    async def scenario(client: TestClient) -> str:
        await fetch(client, "POST", "/", data=b"a", headers=FORM)
        response = await client.get("/metrics")
        return await response.text()

    text = serve(app, scenario)
    exposed = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    assert documented == exposed
    assert "_created" not in text
