"""Streaming generation over Server-Sent Events, against a tiny GPT-2."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest

from helpers import ServerProcess, build_tiny_gpt2, wait_until

GREEDY = {"max_new_tokens": 60, "min_new_tokens": 60, "do_sample": False}  # no early EOS


@pytest.fixture(scope="module")
def generation_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    model = build_tiny_gpt2(models_dir / "tiny-gpt2", seed=3)
    server = ServerProcess(["--model", str(model)], tmp_path_factory.mktemp("logs") / "gpt2.log").start()
    yield server
    server.stop()


async def read_stream(url: str, prompt: str, params: dict, stop_after: int | None = None) -> list[tuple[float, dict]]:
    """(arrival time, event) for each SSE event; optionally hang up early."""
    events = []
    async with aiohttp.ClientSession() as session:
        body = {"inputs": prompt, "parameters": params, "stream": True}
        async with session.post(url, json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    assert raw.startswith(b"data: "), raw
                    events.append((time.monotonic(), json.loads(raw[len(b"data: "):])))
                    if stop_after is not None and len(events) >= stop_after:
                        return events
    return events


def test_tokens_arrive_incrementally_and_join_to_the_plain_output(generation_server: ServerProcess) -> None:
    prompt = "once upon a time"
    started = time.monotonic()
    events = asyncio.run(read_stream(generation_server.url + "/", prompt, GREEDY))
    tokens, final = events[:-1], events[-1][1]
    assert len(tokens) == GREEDY["max_new_tokens"]
    assert [e["index"] for _, e in tokens] == list(range(len(tokens)))
    # the first token came long before the last one was generated
    first_at, last_at = tokens[0][0], events[-1][0]
    assert first_at - started < 0.5 * (last_at - started)

    plain = generation_server.post_json({"inputs": prompt, "parameters": GREEDY}).json()
    assert final["generated_text"] == plain[0]["generated_text"]
    assert final["output"] == plain
    assert prompt + "".join(e["token"]["text"] for _, e in tokens) == plain[0]["generated_text"]


def test_two_concurrent_streams_both_progress(generation_server: ServerProcess) -> None:
    url = generation_server.url + "/"

    async def both():
        return await asyncio.gather(read_stream(url, "the first story", GREEDY), read_stream(url, "a second tale", GREEDY))

    a, b = asyncio.run(both())
    assert len(a) == len(b) == GREEDY["max_new_tokens"] + 1
    # interleaved, not one after the other: each began before the other ended
    assert a[0][0] < b[-1][0] and b[0][0] < a[-1][0]
    a_times = [t for t, _ in a]
    interleaved = sum(1 for t, _ in b if a_times[0] < t < a_times[-1])
    assert interleaved > len(b) // 4


def test_disconnect_stops_generation(generation_server: ServerProcess) -> None:
    params = {"max_new_tokens": 100, "min_new_tokens": 100, "do_sample": False}
    events = asyncio.run(read_stream(generation_server.url + "/", "stop me early", params, stop_after=3))
    assert len(events) == 3
    try:
        found = wait_until(lambda: re.search(r"stream \d+ cancelled after (\d+) tokens", generation_server.log()),
                           timeout=10, interval=0.05, what="the worker's cancellation logged")
    except AssertionError as exc:
        raise AssertionError(generation_server.log()[-2000:]) from exc
    assert int(found.group(1)) < 100
    assert generation_server.post_json({"inputs": "still fine", "parameters": {"max_new_tokens": 3}}).status == 200


def test_stream_errors_before_the_first_token_keep_their_status(generation_server: ServerProcess) -> None:
    # the worker's rejection; parse errors and the SSE framing of every
    # failure are the front-end's alone: test_app_streams.py covers them in-process
    bad = generation_server.post_json({"inputs": "x", "parameters": {"bogus": 1}, "stream": True})
    assert bad.status == 422 and bad.json()["type"] == "invalid_parameters"


def test_streaming_needs_a_generation_model(fill_mask_server: ServerProcess) -> None:
    response = fill_mask_server.post_json({"inputs": "a [MASK]", "stream": True})
    assert response.status == 422
