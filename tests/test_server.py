"""The core server, end to end: a real `python -m inferserve` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import ServerProcess, mapped_libraries, pid_alive, start_together, stop_all, wait_until


@pytest.fixture(scope="module")
def fill_mask_pipeline(fill_mask_model: Path):
    import transformers

    return transformers.pipeline("fill-mask", model=str(fill_mask_model), device="cpu")


def assert_fill_mask_equal(got: Any, expected: Any) -> None:
    """Same predictions; scores equal up to float noise from batching."""
    if isinstance(expected, list) and expected and isinstance(expected[0], list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_fill_mask_equal(g, e)
        return
    assert [r["token"] for r in got] == [r["token"] for r in expected]
    assert [r["sequence"] for r in got] == [r["sequence"] for r in expected]
    for g, e in zip(got, expected):
        assert g["score"] == pytest.approx(e["score"], rel=1e-4, abs=1e-7)


def test_raw_text_body_returns_what_the_pipeline_returns(fill_mask_server: ServerProcess, fill_mask_pipeline) -> None:
    response = fill_mask_server.post_text("test [MASK]")
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    assert_fill_mask_equal(response.json(), fill_mask_pipeline("test [MASK]"))
    assert response.headers["X-Request-Id"]
    assert int(response.headers["X-Batch-Size"]) >= 1


def test_json_single_list_and_parameters(fill_mask_server: ServerProcess, fill_mask_pipeline) -> None:
    single = fill_mask_server.post_json({"inputs": "paris is the [MASK] of france."})
    assert single.status == 200
    assert_fill_mask_equal(single.json(), fill_mask_pipeline("paris is the [MASK] of france."))

    texts = ["the [MASK] sat on the mat.", "hello [MASK]!", "a [MASK] day"]
    many = fill_mask_server.post_json({"inputs": texts})
    assert many.status == 200
    got = many.json()
    assert len(got) == 3
    for text, output in zip(texts, got):  # in order, one output per input
        assert_fill_mask_equal(output, fill_mask_pipeline(text))

    top2 = fill_mask_server.post_json({"inputs": "hello [MASK]!", "parameters": {"top_k": 2}})
    assert top2.status == 200
    assert len(top2.json()) == 2
    assert_fill_mask_equal(top2.json(), fill_mask_pipeline("hello [MASK]!", top_k=2))


async def _concurrent(url: str, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, str], Any]]:
    async with aiohttp.ClientSession() as session:
        async def one(body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
            async with session.post(url, json=body) as resp:
                return resp.status, resp.headers.copy(), await resp.json()

        return await asyncio.gather(*(one(b) for b in bodies))


def test_concurrent_requests_are_batched_within_the_max_size(fill_mask_server: ServerProcess, fill_mask_pipeline) -> None:
    texts = [f"request number {i} is a [MASK]." for i in range(32)]
    results = asyncio.run(_concurrent(fill_mask_server.url + "/", [{"inputs": t} for t in texts]))
    sizes = [int(headers["X-Batch-Size"]) for _, headers, _ in results]
    assert all(status == 200 for status, _, _ in results)
    assert max(sizes) <= 4  # --max-batch-size 4
    assert max(sizes) > 1  # batching happened
    for text, (_, _, body) in zip(texts, results):  # nobody got a neighbour's answer
        assert_fill_mask_equal(body, fill_mask_pipeline(text))


def test_mixed_parameters_are_batched_separately_not_rejected(fill_mask_server: ServerProcess) -> None:
    bodies = [{"inputs": f"item {i} [MASK]", "parameters": {"top_k": 1 + i % 3}} for i in range(12)]
    results = asyncio.run(_concurrent(fill_mask_server.url + "/", bodies))
    for body, (status, _, output) in zip(bodies, results):
        assert status == 200
        assert len(output) == body["parameters"]["top_k"]


# The worker's rejections, the size flags as the CLI wires them, and one
# parse error end to end. Every parse error, status and error shape of the
# front-end alone is covered in-process by test_app_errors.py.
BAD_REQUESTS = [
    # (description, body, content type, expected status, expected type)
    ("malformed json", b'{"inputs": ', "application/json", 400, "invalid_json"),
    ("too large", b"x" * 5000, "text/plain", 413, "payload_too_large"),
    ("too many inputs", json.dumps({"inputs": ["a [MASK]"] * 17}).encode(), "application/json", 413, "too_many_inputs"),
    ("unsupported type", b"\x89PNG", "image/png", 415, "unsupported_media_type"),
    ("unknown parameter", b'{"inputs": "a [MASK]", "parameters": {"bogus": 1}}', "application/json", 422, "invalid_parameters"),
    ("no mask token", b'{"inputs": "there is no mask here"}', "application/json", 422, "invalid_input"),
    ("no mask in one of many", b'{"inputs": ["a [MASK]", "none here"]}', "application/json", 422, "invalid_input"),
]


@pytest.mark.parametrize("description,body,content_type,status,kind", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_json_4xx_and_the_server_keeps_serving(
    fill_mask_server: ServerProcess, description: str, body: bytes, content_type: str, status: int, kind: str
) -> None:
    response = fill_mask_server.request("POST", "/", body, {"Content-Type": content_type})
    assert response.status == status, response.body
    error = response.json()
    assert error["type"] == kind
    assert isinstance(error["error"], str) and error["error"]
    assert "Traceback" not in error["error"] and "/site-packages/" not in error["error"]
    assert fill_mask_server.post_text("still [MASK] fine").status == 200


def test_health_and_ready(fill_mask_server: ServerProcess) -> None:
    assert fill_mask_server.get("/health").status == 200
    assert fill_mask_server.get("/ready").status == 200


def test_front_end_never_loads_torch(fill_mask_server: ServerProcess) -> None:
    (worker,) = fill_mask_server.worker_pids()
    assert "libtorch" not in mapped_libraries(fill_mask_server.pid)
    assert "libtorch" in mapped_libraries(worker)  # the check itself can see torch


FIXED_DELAY_MS = 300


@pytest.fixture(scope="module")
def configured(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """Servers with the flags one test each needs, started side by side."""
    logs, model = tmp_path_factory.mktemp("logs"), ["--model", str(fill_mask_model)]
    servers = {
        # A fixed batch delay, and room for bodies larger than the worker's pipe.
        "fixed": ServerProcess([*model, "--max-batch-delay-ms", str(FIXED_DELAY_MS), "--batch-wait", "fixed",
                                "--max-batch-size", "8", "--max-body-bytes", "2000000", "--max-inputs", "64"],
                               logs / "fixed.log"),
        # asyncio's own event loop (the others run on the default, uvloop).
        "adaptive": ServerProcess([*model, "--max-batch-delay-ms", "1000", "--loop", "asyncio"],
                                  logs / "adaptive.log"),
        # Ended by their test, one with SIGTERM, one with SIGKILL.
        "terminated": ServerProcess(model, logs / "terminated.log"),
        "killed": ServerProcess(model, logs / "killed.log"),
    }
    start_together(list(servers.values()))
    yield servers
    stop_all(list(servers.values()))


def test_lone_request_waits_at_most_the_batch_delay(configured: dict[str, ServerProcess]) -> None:
    delay_ms = FIXED_DELAY_MS
    server = configured["fixed"]
    server.post_text("warm [MASK]")
    started = time.monotonic()
    response = server.post_text("lone [MASK]")
    elapsed_ms = (time.monotonic() - started) * 1000
    compute_ms = float(response.headers["X-Compute-Time-Ms"])
    assert response.status == 200
    assert delay_ms * 0.9 <= elapsed_ms  # fixed policy: the batch stayed open for the delay...
    assert elapsed_ms <= delay_ms + compute_ms + 150  # ...and no longer


def test_adaptive_wait_answers_a_lone_request_without_the_delay(configured: dict[str, ServerProcess]) -> None:
    server = configured["adaptive"]
    server.post_text("warm [MASK]")
    started = time.monotonic()
    assert server.post_text("lone [MASK]").status == 200
    assert time.monotonic() - started < 0.5


def test_requests_larger_than_the_worker_pipe_all_arrive_whole(configured: dict[str, ServerProcess]) -> None:
    """Four ~700 KB requests at once: more than the 1 MiB pipe holds while the
    worker computes. The front-end queues what the pipe cannot take (it never
    blocks its loop on a full pipe) and every request comes back whole, with
    its own answers, in order."""
    server = configured["fixed"]
    filler = " " + "x" * 17_000  # ~17 KB per input, yet one (unknown) token: cheap to tokenize
    bodies = [{"inputs": [f"[MASK] request {r} input {i}{filler}" for i in range(40)]} for r in range(4)]
    assert all(len(json.dumps(b)) > 650_000 for b in bodies)
    results = asyncio.run(_concurrent(server.url + "/", bodies))
    for r, (status, _, outputs) in enumerate(results):
        assert status == 200, outputs
        assert len(outputs) == 40
        for i, predictions in enumerate(outputs):
            assert f"request {r} input {i}" in predictions[0]["sequence"]
    assert server.get("/health").status == 200


def test_the_front_end_runs_on_uvloop_by_default_and_on_asyncio_when_asked(
        configured: dict[str, ServerProcess]) -> None:
    """Both loops serve the same answers; the listening line names the loop."""
    on_uvloop, on_asyncio = configured["fixed"], configured["adaptive"]
    assert "(uvloop)" in on_uvloop.log() and "(asyncio)" in on_asyncio.log()
    answers = [server.post_text("the loop [MASK]") for server in (on_uvloop, on_asyncio)]
    assert [a.status for a in answers] == [200, 200]
    assert_fill_mask_equal(answers[0].json(), answers[1].json())


def test_sigterm_or_sigkill_of_the_front_end_leaves_no_worker(configured: dict[str, ServerProcess]) -> None:
    """SIGTERM: a clean exit, 0; SIGKILL: the workers die with it (PR_SET_PDEATHSIG), no orphans."""
    terminated, killed = configured["terminated"], configured["killed"]
    assert terminated.worker_pids() and killed.worker_pids()
    workers = terminated.all_children() + killed.all_children()
    assert terminated.stop(signal.SIGTERM) == 0
    killed.stop(signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=5, interval=0.05, what="workers gone")


def test_sigterm_while_the_model_loads_stops_its_worker_without_waiting(server_factory, fill_mask_model: Path) -> None:
    """A loading worker reads no message until it is ready; the drain does not wait for it."""
    server = server_factory("--model", str(fill_mask_model), wait_ready=False)

    def loading() -> bool:
        try:
            return bool(server.worker_pids()) and server.get("/ready").status == 503
        except OSError:  # not listening yet
            return False

    wait_until(loading, timeout=30, interval=0.05, what="listening while the worker loads")
    workers = server.all_children()
    assert server.stop(signal.SIGTERM) == 0
    assert "stopped while loading" in server.log() and " ready: model" not in server.log()
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=5, interval=0.05, what="workers gone")


@pytest.mark.parametrize("argv", [
    ["--model", "/nowhere/does-not-exist", "--task", "fill-mask"],
    ["--model", "./bert-base-uncased"],
    ["--max-queue", "0"],
    ["--model", "a=./x", "--model", "a=./y"],
])
def test_a_start_up_failure_of_the_users_is_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Before any process starts: no traceback (only with --log-level debug), argparse's status."""
    from inferserve.__main__ import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("inferserve: cannot serve: ")
    assert main([*argv, "--log-level", "debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
