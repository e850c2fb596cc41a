"""Routing, the API key, readiness, draining and admission; the probes and /info."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app_harness import (
    EMBEDDER, FORM, JSON, assert_our_error, assert_tei_error, eventually, FakeBackend, fetch, make_app, one,
    post_json, Reply, scrape, serve,
)
from inferserve.__main__ import build_parser, config_from_args
from inferserve.common.config import ModelSpec, ServerConfig
from inferserve.frontend.state import STATE_KEY
from inferserve.http import create_app


# ---- errors: routing, auth, readiness, draining, admission ---------------------


def test_unknown_route_and_wrong_method_are_json_with_allow() -> None:
    app, _ = make_app()

    async def scenario(client: TestClient) -> list[Reply]:
        return [await fetch(client, *request) for request in
                (("GET", "/nope"), ("GET", "/"), ("POST", "/health"), ("PUT", "/v1/embeddings"))]

    missing, get_root, post_health, put_openai = serve(app, scenario)
    assert_our_error(missing, 404, "not_found")
    assert "Allow" not in missing.headers
    assert_our_error(get_root, 405, "method_not_allowed")
    assert get_root.headers["Allow"] == "POST"
    assert_our_error(post_health, 405, "method_not_allowed")
    assert set(post_health.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert put_openai.status == 405 and put_openai.headers["Allow"] == "POST"


def test_api_key_guards_everything_but_the_probes() -> None:
    app, backend = make_app(api_key="s3cret")
    body = {"data": orjson.dumps({"inputs": "a"})}

    async def scenario(client: TestClient) -> dict[str, Reply]:
        return {
            "none": await fetch(client, "POST", "/", **body, headers=JSON),
            "wrong": await fetch(client, "POST", "/", **body, headers={**JSON, "Authorization": "Bearer nope"}),
            "not bearer": await fetch(client, "POST", "/", **body, headers={**JSON, "Authorization": "s3cret"}),
            "right": await fetch(client, "POST", "/", **body, headers={**JSON, "Authorization": "Bearer s3cret"}),
            "/health": await fetch(client, "GET", "/health"),
            "/ready": await fetch(client, "GET", "/ready"),
            "/metrics": await fetch(client, "GET", "/metrics"),
            "/info": await fetch(client, "GET", "/info"),
            "/embed": await fetch(client, "POST", "/embed", **body, headers=JSON),
            "/openapi.json": await fetch(client, "GET", "/openapi.json"),
        }

    replies = serve(app, scenario)
    for name in ("none", "wrong", "not bearer", "/metrics", "/info", "/embed"):
        if name == "/embed":  # in its API family's shape, as every error there
            assert_tei_error(replies[name], 401, "Validation")
        else:
            assert_our_error(replies[name], 401, "unauthorized")
        assert replies[name].headers["WWW-Authenticate"] == "Bearer"
    assert replies["right"].status == 200
    assert replies["/health"].status == 200 and replies["/ready"].status == 200
    assert replies["/openapi.json"].status == 200  # documentation stays readable
    assert len(backend.seen) == 1  # only the request with the key reached the backend


def test_the_api_key_flag_and_environment_variable_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from_flag = config_from_args(build_parser().parse_args(["--model", "fake", "--api-key", "k1"]))
    monkeypatch.setenv("INFERSERVE_API_KEY", "k2")
    from_env = config_from_args(build_parser().parse_args(["--model", "fake"]))
    assert (from_flag.api_key, from_env.api_key) == ("k1", "k2")
    app = create_app(from_env, backend=FakeBackend())

    async def scenario(client: TestClient) -> tuple[Reply, Reply]:
        denied = await fetch(client, "POST", "/", data=b"a", headers={**FORM, "Authorization": "Bearer k1"})
        allowed = await fetch(client, "POST", "/", data=b"a", headers={**FORM, "Authorization": "Bearer k2"})
        return denied, allowed

    denied, allowed = serve(app, scenario)
    assert denied.status == 401 and allowed.status == 200


@pytest.mark.parametrize("state,refused,ready_says", [
    ("loading", "the model is not ready", "the model is loading"),
    ("draining", "the server is shutting down", "draining"),
])
def test_loading_or_draining_is_503_with_retry_after_for_requests_and_ready_but_not_health(
        state: str, refused: str, ready_says: str) -> None:
    app, backend = make_app(FakeBackend(ready=state != "loading"))
    app[STATE_KEY].draining = state == "draining"

    async def scenario(client: TestClient) -> tuple[Reply, Reply, Reply]:
        return (await fetch(client, "POST", "/", data=b"a", headers=FORM),
                await fetch(client, "GET", "/ready"), await fetch(client, "GET", "/health"))

    answer, ready, health = serve(app, scenario)
    assert assert_our_error(answer, 503, "unavailable")["error"] == refused
    assert assert_our_error(ready, 503, "unavailable")["error"] == ready_says
    assert answer.headers["Retry-After"] == ready.headers["Retry-After"] == "1"
    assert health.status == 200
    assert backend.seen == []


def test_a_full_queue_gets_503_without_calling_the_backend() -> None:
    reply, backend = post_json("/", {"inputs": "a"}, FakeBackend(in_flight=3), max_queue=3)
    assert assert_our_error(reply, 503, "unavailable")["error"] == "the server is overloaded; retry later"
    assert reply.headers["Retry-After"] == "1"
    assert backend.seen == []


def test_admission_counts_requests_held_by_the_backend() -> None:
    backend = FakeBackend(hold=asyncio.Event())
    app, _ = make_app(backend, max_queue=2)

    async def scenario(client: TestClient) -> tuple[list[Reply], Reply, int]:
        held = [asyncio.create_task(fetch(client, "POST", "/", data=b"a", headers=FORM)) for _ in range(2)]
        await eventually(lambda: backend.in_flight == 2)
        rejected = await fetch(client, "POST", "/", data=b"b", headers=FORM)
        calls = len(backend.seen)
        backend.hold.set()
        return await asyncio.gather(*held), rejected, calls

    held, rejected, calls_when_rejected = serve(app, scenario)
    assert_our_error(rejected, 503, "unavailable")
    assert calls_when_rejected == 2
    assert [r.status for r in held] == [200, 200]


def test_admission_holds_for_a_request_whose_body_was_still_arriving() -> None:
    backend = FakeBackend(hold=asyncio.Event())
    app, _ = make_app(backend, max_queue=1)
    body_done = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"slow "
        await body_done.wait()
        yield b"body"

    async def scenario(client: TestClient) -> tuple[Reply, int]:
        slow = asyncio.create_task(fetch(client, "POST", "/", data=slow_body(), headers=FORM))
        # its handler has started, and passed admission (no await between the
        # two), once the in-flight gauge counts it beside the scrape itself
        deadline = time.monotonic() + 5
        while (await scrape(client))["inferserve_in_flight_requests"] < 2:
            assert time.monotonic() < deadline
        fast = asyncio.create_task(fetch(client, "POST", "/", data=b"fast", headers=FORM))
        await eventually(lambda: backend.in_flight == 1)
        body_done.set()
        await eventually(lambda: slow.done() or backend.in_flight == 2)
        most = backend.in_flight
        backend.hold.set()
        await fast
        return await slow, most

    slow, most_in_flight = serve(app, scenario)
    assert most_in_flight <= 1
    assert_our_error(slow, 503, "unavailable")


# ---- probes and /info -----------------------------------------------------------


def test_health_and_ready() -> None:
    app, backend = make_app()

    async def scenario(client: TestClient) -> list[Reply]:
        return [await fetch(client, "GET", "/health"), await fetch(client, "GET", "/ready"),
                await fetch(client, "HEAD", "/health")]

    health, ready, head = serve(app, scenario)
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    assert head.status == 200


def test_info_reports_the_worker_and_the_limits() -> None:
    reply, _ = one("GET", "/info", FakeBackend(info=EMBEDDER), {
        "max_queue": 77, "max_inputs": 9, "max_body_bytes": 1234, "request_timeout_s": 12.0,
        "served_model_name": "served-name"})
    info = reply.json()
    assert reply.status == 200
    expected = {
        "served_model_name": "served-name", "model_id": "/models/fake-embed", "task": "feature-extraction",
        "device": "cpu", "model_dtype": "float32", "embedding_dimension": 8, "ready": True, "workers": 1,
        "max_batch_size": 32, "max_batch_delay_ms": 5.0, "batch_wait": "adaptive",
        "max_concurrent_requests": 77, "max_inputs": 9, "max_body_bytes": 1234, "request_timeout_s": 12.0,
    }
    assert {k: info[k] for k in expected} == expected
    # Each fact once: no second name for TEI's fields.
    assert not {"model", "model_path", "dtype", "max_queue"} & set(info)
    values = {k: v for k, v in info.items() if isinstance(v, str)}
    assert sorted(values.values()).count("served-name") == 1
    assert set(info["versions"]) >= {"inferserve", "torch", "transformers", "aiohttp"}
    assert info["uptime_s"] >= 0


def test_info_before_any_worker_reports_uses_the_config() -> None:
    app = create_app(ServerConfig(model=ModelSpec(model="some/model", task="fill-mask", device="cuda:1")),
                     backend=FakeBackend(ready=False, info=None))
    reply = serve(app, lambda client: fetch(client, "GET", "/info"))
    info = reply.json()
    assert (info["served_model_name"], info["model_id"], info["task"], info["device"], info["model_dtype"],
            info["ready"]) == ("some/model", "some/model", "fill-mask", "cuda:1", "auto", False)
