"""--workers 2: both serve, one dying costs nothing, results match one worker."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import ServerProcess, scrape, wait_until


@pytest.fixture(scope="module")
def pool_server(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(
        ["--model", str(fill_mask_model), "--workers", "2", "--max-batch-size", "4", "--max-batch-delay-ms", "20"],
        tmp_path_factory.mktemp("logs") / "pool.log",
    ).start()
    # /ready is up with one worker; wait for both
    wait_until(lambda: len(server.worker_pids()) >= 2 and scrape(server).get("inferserve_worker_up", 0) >= 1,
               timeout=60, interval=0.1, what="two worker processes")
    yield server
    server.stop()


async def _post_all(url: str, texts: list[str]) -> list[tuple[int, Any]]:
    async with aiohttp.ClientSession() as session:
        async def one(text: str) -> tuple[int, Any]:
            async with session.post(url, json={"inputs": text}) as resp:
                return resp.status, await resp.json()

        return await asyncio.gather(*(one(t) for t in texts))


def _wait_all_ready(server: ServerProcess) -> None:
    try:
        wait_until(lambda: "worker 0 ready" in (log := server.log()) and "worker 1 ready" in log,
                   timeout=60, interval=0.1, what="both workers ready")
    except AssertionError as exc:
        raise AssertionError(server.log()[-3000:]) from exc


def test_both_workers_serve_and_match_one_worker(pool_server: ServerProcess, fill_mask_server: ServerProcess) -> None:
    _wait_all_ready(pool_server)
    texts = [f"pool request {i} is [MASK]." for i in range(40)]
    pooled = asyncio.run(_post_all(pool_server.url + "/", texts))
    single = asyncio.run(_post_all(fill_mask_server.url + "/", texts))
    assert all(status == 200 for status, _ in pooled)
    for (_, got), (_, want) in zip(pooled, single):
        assert [r["token"] for r in got] == [r["token"] for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], rel=1e-4)
    samples = scrape(pool_server)
    assert samples['inferserve_worker_answers_total{worker="0"}'] > 0
    assert samples['inferserve_worker_answers_total{worker="1"}'] > 0
    assert len(pool_server.worker_pids()) == 2


def test_killing_one_worker_under_load_loses_nothing(pool_server: ServerProcess) -> None:
    _wait_all_ready(pool_server)
    victim = pool_server.worker_pids()[0]
    texts = [f"survivor {i} [MASK] here" for i in range(64)]
    expected = {t: body for t, (_, body) in zip(texts, asyncio.run(_post_all(pool_server.url + "/", texts)))}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async def one(text: str):
                async with session.post(pool_server.url + "/", json={"inputs": text}) as resp:
                    return text, resp.status, await resp.json()

            tasks = [asyncio.create_task(one(t)) for t in texts * 3]
            # Once answers flow, the rest are in flight on both workers.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            os.kill(victim, signal.SIGKILL)
            return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert [status for _, status, _ in results] == [200] * len(results)
    for text, _, body in results:  # the correct output, not just a 200
        assert [r["token"] for r in body] == [r["token"] for r in expected[text]]
    assert "died with a request in flight: retrying" in pool_server.log()  # in flight, not just queued later
    assert pool_server.post_text("after the kill [MASK]").status == 200
    # the dead one comes back
    wait_until(lambda: scrape(pool_server)["inferserve_worker_restarts_total"] >= 1, timeout=60, interval=0.1,
               what="the killed worker restarted")
    assert scrape(pool_server)["inferserve_worker_restarts_total"] == 1
