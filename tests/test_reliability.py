"""Never lose a request: overload, deadlines, cancellation, faults, drain.

(The API key is the front-end's alone: test_app_admission.py covers it in-process.)"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from helpers import (
    ServerProcess, pid_alive, queue_depth, scrape, start_together, stop_all, wait_until, wait_until_async,
)

# A batch that stays open a long time keeps requests in flight on purpose.
HOLD = ["--max-batch-delay-ms", "1000", "--batch-wait", "fixed", "--max-batch-size", "64"]
MAX_QUEUE = 16


@pytest.fixture(scope="module")
def servers(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    args = ["--model", str(fill_mask_model), "--max-queue", str(MAX_QUEUE), *HOLD]
    started = start_together([ServerProcess(args, logs / "held.log"), ServerProcess(args, logs / "drained.log")])
    yield started
    stop_all(started)


@pytest.fixture(scope="module")
def held_server(servers: list[ServerProcess]) -> ServerProcess:
    """One server for the tests that leave it as they found it (each reads
    counters as differences; the killed worker is replaced before its test ends)."""
    return servers[0]


async def _post(session: aiohttp.ClientSession, url: str, text: str, **kw) -> tuple[int, dict, float]:
    async with session.post(url, json={"inputs": text}, **kw) as resp:
        body = await resp.json()
        return resp.status, {"body": body, "headers": resp.headers.copy()}, time.monotonic()


def test_overload_gets_503_with_retry_after_while_accepted_requests_succeed(held_server: ServerProcess) -> None:
    server = held_server

    async def scenario():
        async with aiohttp.ClientSession() as session:
            accepted = [asyncio.create_task(_post(session, server.url + "/", f"ok {i} [MASK]"))
                        for i in range(MAX_QUEUE)]
            await wait_until_async(lambda: queue_depth(server) == MAX_QUEUE, what="a full queue in the worker")
            started = time.monotonic()
            async with session.post(server.url + "/", json={"inputs": "one too many [MASK]"}) as resp:
                rejected = (resp.status, resp.headers.get("Retry-After"), await resp.json(), time.monotonic() - started)
            return await asyncio.gather(*accepted), rejected

    accepted, (status, retry_after, body, elapsed) = asyncio.run(scenario())
    assert status == 503 and retry_after == "1" and body["type"] == "unavailable"
    assert elapsed < 0.5  # answered at once, without waiting for the worker
    assert [s for s, _, _ in accepted] == [200] * MAX_QUEUE


def test_expired_request_gets_504_and_is_never_computed(held_server: ServerProcess) -> None:
    server = held_server
    before = scrape(server)["inferserve_items_computed_total"]
    started = time.monotonic()
    response = server.post_json({"inputs": "too late [MASK]"}, headers={"X-Request-Timeout": "0.2"})
    assert response.status == 504 and response.json()["type"] == "deadline_exceeded"
    assert time.monotonic() - started < 0.9
    # Were the expired input still queued, this one would share its batch
    # (held open 1 s) or follow it: either way two inputs computed, not one.
    in_time = server.post_json({"inputs": "in time [MASK]"})
    assert in_time.status == 200 and in_time.headers["X-Batch-Size"] == "1"
    assert scrape(server)["inferserve_items_computed_total"] == before + 1


def test_disconnected_client_is_skipped(held_server: ServerProcess) -> None:
    server = held_server
    before = scrape(server)
    body = b'{"inputs": "gone [MASK]"}'
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        wait_until(lambda: queue_depth(server) == 1, what="sent to the worker")  # its batch is not yet due
    cancelled = 'inferserve_requests_total{route="/",status="499"}'
    wait_until(lambda: scrape(server).get(cancelled, 0) == before.get(cancelled, 0) + 1, what="the hang-up seen")
    assert queue_depth(server) == 0
    # The cancel went down the pipe before this request (one pipe, in order).
    # Were the gone input still queued, this one would share its batch (held
    # open 1 s) or follow it: either way two inputs computed, not one.
    after_it = server.post_json({"inputs": "still here [MASK]"})
    assert after_it.status == 200 and after_it.headers["X-Batch-Size"] == "1"
    after = scrape(server)
    assert after["inferserve_items_computed_total"] == before["inferserve_items_computed_total"] + 1
    assert after[cancelled] == before.get(cancelled, 0) + 1


def test_bad_item_fails_alone_among_batched_neighbours(held_server: ServerProcess) -> None:
    server = held_server
    texts = [f"good {i} [MASK]" for i in range(6)] + ["this one has no mask"]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(_post(session, server.url + "/", t) for t in texts))

    results = asyncio.run(scenario())
    assert [s for s, _, _ in results] == [200] * 6 + [422]
    reference = server.post_json({"inputs": texts[:6]}).json()
    for (_, got, _), want in zip(results[:6], reference):
        assert [r["token"] for r in got["body"]] == [r["token"] for r in want]
    assert max(int(got["headers"]["X-Batch-Size"]) for _, got, _ in results[:6]) > 1


def _retries(samples: dict[str, float]) -> float:
    return samples.get("inferserve_request_retries_total", 0.0)  # all models together


def test_killed_lone_worker_has_its_in_flight_requests_answered_by_the_replacement(held_server: ServerProcess) -> None:
    """One worker, killed mid-batch: each request in flight is sent once to
    the replacement (started at once, from the preloaded helper) and answered
    200, correctly, within its deadline."""
    server = held_server
    (worker,) = server.worker_pids()
    before = scrape(server)
    texts = [f"x {i} [MASK]" for i in range(16)]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            in_flight = [asyncio.create_task(_post(session, server.url + "/", text)) for text in texts]
            await wait_until_async(lambda: queue_depth(server) == 16, what="all 16 in the worker")
            killed_at = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            return killed_at, await asyncio.gather(*in_flight)

    killed_at, results = asyncio.run(scenario())
    assert [s for s, _, _ in results] == [200] * 16
    for text, (_, response, _) in zip(texts, results):  # each its own answer, not a neighbour's
        assert all(p["sequence"].startswith(text.removesuffix(" [MASK]")) for p in response["body"])
    assert max(done for _, _, done in results) - killed_at < 30.0  # the default deadline
    after = scrape(server)
    assert after["inferserve_worker_restarts_total"] == before["inferserve_worker_restarts_total"] + 1
    assert _retries(after) == _retries(before) + 16
    assert "restarting now" in server.log()  # the first restart waits for nothing
    assert not pid_alive(worker)
    assert server.get("/ready").status == 200
    assert server.post_json({"inputs": "after [MASK]"}).status == 200


def test_sigterm_drains_in_flight_requests_then_exits_0(servers: list[ServerProcess]) -> None:
    server = servers[1]  # its own: the test ends it

    async def scenario():
        async with aiohttp.ClientSession() as session:
            in_flight = [asyncio.create_task(_post(session, server.url + "/", f"drain {i} [MASK]")) for i in range(8)]
            await wait_until_async(lambda: queue_depth(server) == 8, what="all 8 in the worker")
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*in_flight)

    results = asyncio.run(scenario())
    assert [s for s, _, _ in results] == [200] * 8
    assert server.process.wait(30) == 0
