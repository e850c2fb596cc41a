"""A dead worker costs little: the remembered precision choice, the preloaded
helper workers fork from, and a spare that takes a dead worker's place.

(The lone worker's in-flight requests answered by its replacement:
test_reliability.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import ServerProcess, build_tiny_bert, scrape, wait_until
from inferserve.common.config import ModelSpec
from inferserve.common.preloaded_starts import PreloadedStarts
from inferserve.model import choice_cache, precision
from inferserve.model.loading import load_model

# ---- the remembered choice (in-process) ------------------------------------------------


def test_the_choice_is_remembered_and_measured_again_when_it_disagrees_or_the_model_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_bert(tmp_path / "model", "BertForMaskedLM")
    spec = ModelSpec(model=str(model), dtype="bfloat16", engine="torch", cache_dir=str(tmp_path / "cache"))
    timed: list[Any] = []

    def counting_timer(model: Any, features: Any) -> float:  # a stand-in clock: bfloat16 twice as fast
        timed.append(model)
        return 5.0 if str(model.dtype) == "torch.bfloat16" else 10.0

    monkeypatch.setattr(precision, "_time_forward", counting_timer)
    monkeypatch.setattr(choice_cache, "machine_busy", lambda: None)  # the suite's own servers load the box
    first = load_model(spec)
    assert timed and first.precision.chosen == "measured" and first.precision.measured_at
    assert first.dtype == "bfloat16"
    timed.clear()

    again = load_model(spec)
    assert timed == []  # no timing loop: the choice is reused
    assert again.precision.chosen == "remembered"
    assert again.precision.measured_at == first.precision.measured_at
    assert again.dtype == "bfloat16" and again.precision.dtype == "bfloat16"
    assert again.precision.min_cosine == first.precision.min_cosine  # the measurement's report, kept

    with monkeypatch.context() as drifted:  # as if the reduced precision's outputs no longer agreed
        drifted.setattr(precision, "agrees", lambda *args: False)
        assert load_model(spec).precision.chosen == "measured"
    timed.clear()

    config = model / "config.json"  # the model changes: the choice is measured again
    config.write_text(json.dumps(json.loads(config.read_text()), indent=4))
    changed = load_model(spec)
    assert timed and changed.precision.chosen == "measured"


def test_the_cost_model_is_remembered_beside_the_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferserve import worker
    from inferserve.model import cost_model

    model = build_tiny_bert(tmp_path / "model", "BertModel")
    spec = ModelSpec(model=str(model), dtype="float32", engine="torch", cache_dir=str(tmp_path / "cache"))
    from inferserve.ipc import ModelFacts

    tasks = type("Tasks", (), {"facts": ModelFacts(max_input_length=64)})()
    timed: list[int] = []
    real_measure = cost_model.measure_model

    def counting_measure(*args: Any) -> Any:
        timed.append(1)
        return real_measure(*args)

    monkeypatch.setattr(cost_model, "measure_model", counting_measure)
    monkeypatch.setattr(choice_cache, "machine_busy", lambda: None)
    first_cost, first_report = worker._measure_cost(load_model(spec), tasks)
    assert timed == [1] and first_report.measured and not first_report.remembered
    again_cost, again_report = worker._measure_cost(load_model(spec), tasks)
    assert timed == [1]  # the restart read it back instead of timing again
    assert again_report.remembered and again_cost == first_cost
    assert load_model(spec).precision.chosen == "remembered"  # the choice itself still reads back


def test_timings_taken_on_a_busy_machine_are_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_bert(tmp_path / "model", "BertForMaskedLM")
    spec = ModelSpec(model=str(model), dtype="bfloat16", engine="torch", cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(choice_cache, "machine_busy", lambda: "load average 9.0 on 2 cores")
    assert load_model(spec).precision.chosen == "measured"
    assert load_model(spec).precision.chosen == "measured"  # nothing was written: measured again
    assert not (tmp_path / "cache" / "choices").exists() or not any((tmp_path / "cache" / "choices").iterdir())
    monkeypatch.setattr(choice_cache, "machine_busy", lambda: None)
    load_model(spec)
    assert load_model(spec).precision.chosen == "remembered"  # measured on a quiet machine: kept


# ---- the preloaded helper (in-process) ---------------------------------------------------


def _probe(conn: Any) -> None:
    """Runs in a fork of the helper: what the helper had imported and initialised."""
    import sys

    preloaded = "inferserve.model.loading" in sys.modules and "torch" in sys.modules
    import torch

    conn.send({"preloaded": preloaded, "cuda_initialized": torch.cuda.is_initialized()})
    conn.close()


def test_the_helper_has_the_worker_wing_imported_and_no_cuda_state() -> None:
    helper = PreloadedStarts()
    helper.start()
    try:
        receiver, sender = helper.context.Pipe(duplex=False)
        child = helper.context.Process(target=_probe, args=(sender,), daemon=True)
        child.start()
        sender.close()
        assert receiver.poll(120)
        seen = receiver.recv()
        child.join(10)
    finally:
        helper.stop()
    assert seen == {"preloaded": True, "cuda_initialized": False}


# ---- a spare worker (a real server) -------------------------------------------------------


@pytest.fixture(scope="module")
def spare_server(fill_mask_model: Path, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    server = ServerProcess(["--model", str(fill_mask_model), "--spare-workers", "1", "--max-batch-delay-ms", "200",
                            "--batch-wait", "fixed"], logs / "spare.log")
    server.start()
    wait_until(lambda: len(server.worker_pids()) == 2 and server.log().count(" ready: model") == 2, timeout=90,
               interval=0.1, what="the worker and its spare ready")
    yield server
    server.stop()


def _serving_pid(server: ServerProcess) -> int:
    """Worker 0's process: it serves first, worker 1 is the spare."""
    return int(re.findall(r"worker 0: process (\d+) started", server.log())[-1])


def test_with_a_spare_a_killed_worker_costs_no_request(spare_server: ServerProcess) -> None:
    server = spare_server
    victim = _serving_pid(server)
    spare = next(pid for pid in server.worker_pids() if pid != victim)

    async def scenario() -> list[tuple[int, str, str]]:
        async with aiohttp.ClientSession() as session:
            async def one(i: int) -> tuple[int, str, str]:
                text = f"spare {i}"
                async with session.post(server.url + "/", json={"inputs": f"{text} [MASK]"}) as resp:
                    body = await resp.json()
                    return resp.status, text, body[0]["sequence"] if resp.status == 200 else str(body)

            in_flight = [asyncio.create_task(one(i)) for i in range(16)]
            await asyncio.sleep(0.1)  # inside the 200 ms batch window: in flight in the worker
            os.kill(victim, signal.SIGKILL)
            after = []
            for i in range(16, 40):  # and requests arriving just after the kill
                after.append(asyncio.create_task(one(i)))
                await asyncio.sleep(0.02)
            return await asyncio.gather(*in_flight, *after)

    results = asyncio.run(scenario())
    assert [status for status, _, _ in results] == [200] * len(results), results
    assert all(sequence.startswith(text) for _, text, sequence in results)
    assert "spare worker 1 takes its place" in server.log()
    # The dead worker is started again and becomes the spare.
    wait_until(lambda: server.log().count(" ready: model") == 3, timeout=60, interval=0.1,
               what="the replacement spare ready")
    assert len(server.worker_pids()) == 2 and spare in server.worker_pids()
    assert scrape(server)["inferserve_worker_restarts_total"] == 1
    started = time.monotonic()
    assert server.post_json({"inputs": "after [MASK]"}).status == 200
    assert time.monotonic() - started < 5


# ---- the pool's retry and promotion (in-process, no process started) ------------------------


def _pool(workers: int, spares: int) -> Any:
    from inferserve.common.config import BatchPolicy
    from inferserve.frontend.worker_pool import WorkerPool

    return WorkerPool([ModelSpec(model="unused")] * (workers + spares), BatchPolicy(), spares=spares)


def test_a_request_whose_only_worker_died_waits_for_the_replacement_then_is_answered_once() -> None:
    from inferserve.frontend.errors import WorkerDied
    from inferserve.ipc import Call, RequestKind

    pool = _pool(1, 0)
    (worker,) = pool.workers
    worker.process.ready = True
    sent: list[str] = []

    async def infer(call: Any, deadline: float) -> str:
        sent.append("sent")
        if len(sent) == 1:  # the worker dies with it in flight, and is restarted
            worker.process.ready = False
            asyncio.get_running_loop().call_later(0.05, _replacement_ready, worker)
            raise WorkerDied("worker 0 died")
        return "answer"

    worker.infer = infer  # type: ignore[method-assign]

    async def scenario() -> Any:
        return await pool.infer(Call(RequestKind.PIPELINE, ("x",), {}, single=True), time.monotonic() + 5)

    assert asyncio.run(scenario()) == "answer"
    assert sent == ["sent", "sent"]  # once to the dead worker, once to its replacement


def test_a_request_whose_pipe_broke_before_the_death_was_read_goes_to_the_spare() -> None:
    """The race a loaded box showed: a request sent just after the kill finds
    the pipe broken (EPIPE) while the pool still counts the dead worker
    ready and the spare unpromoted; its retry waits for the death to be
    read (the pipe's end, a loop turn later), then goes to the spare."""
    from inferserve.frontend.errors import WorkerDied
    from inferserve.ipc import Call, RequestKind

    pool = _pool(1, 1)
    serving, spare = pool.workers
    serving.process.ready = spare.process.ready = True
    pool._promote_spares()
    sent: list[str] = []

    async def broken_pipe(call: Any, deadline: float) -> str:
        sent.append("dead")
        # Its death is read from the pipe's end only after this request failed.
        asyncio.get_running_loop().call_later(0.02, _died, serving)
        raise WorkerDied("the worker went away")

    async def answers(call: Any, deadline: float) -> str:
        sent.append("spare")
        return "answer"

    serving.infer = broken_pipe  # type: ignore[method-assign]
    spare.infer = answers  # type: ignore[method-assign]

    async def scenario() -> Any:
        return await pool.infer(Call(RequestKind.PIPELINE, ("x",), {}, single=True), time.monotonic() + 5)

    assert asyncio.run(scenario()) == "answer"
    assert sent == ["dead", "spare"] and spare.serving and not serving.serving


def _died(worker: Any) -> None:
    worker.process.ready = False
    worker._changed()  # what WorkerProcess's end-of-pipe callback does


def _replacement_ready(worker: Any) -> None:
    worker.process.ready = True
    worker._changed()  # what WorkerProcess calls when the replacement reports ready


def test_a_request_is_not_retried_past_its_deadline() -> None:
    from inferserve.frontend.errors import WorkerDied, WorkerUnavailable
    from inferserve.ipc import Call, RequestKind

    pool = _pool(1, 0)
    (worker,) = pool.workers
    worker.process.ready = True

    async def infer(call: Any, deadline: float) -> str:
        worker.process.ready = False  # and no replacement gets ready in time
        raise WorkerDied("worker 0 died")

    worker.infer = infer  # type: ignore[method-assign]

    async def scenario() -> Any:
        return await pool.infer(Call(RequestKind.PIPELINE, ("x",), {}, single=True), time.monotonic() + 0.1)

    with pytest.raises(WorkerUnavailable):
        asyncio.run(scenario())


def test_a_ready_spare_takes_a_lost_workers_place_and_the_restarted_one_becomes_the_spare() -> None:
    pool = _pool(1, 1)
    serving, spare = pool.workers
    assert serving.serving and not spare.serving
    spare.process.ready = True
    assert not pool.ready  # a spare takes no traffic
    serving.process.ready = True
    pool._promote_spares()
    assert serving.serving and not spare.serving and pool.ready
    serving.process.ready = False  # it dies
    serving._changed()
    assert spare.serving and not serving.serving and pool.ready
    serving.process.ready = True  # restarted: it is the spare now
    serving._changed()
    assert spare.serving and not serving.serving


def test_the_first_restart_is_immediate_and_only_a_crash_loop_backs_off() -> None:
    from inferserve.common.config import BatchPolicy
    from inferserve.frontend.worker_process import WorkerProcess
    from inferserve.ipc import WorkerReady

    delays: list[float] = []

    async def scenario() -> None:
        process = WorkerProcess(0, "worker 0", ModelSpec(model="unused"), BatchPolicy(), ("info", "text"),
                                on_message=lambda m: None, on_started=lambda w: None, on_lost=lambda r: None)
        process.fatal = asyncio.get_running_loop().create_future()

        async def restart(delay: float) -> None:  # instead of starting a process
            delays.append(delay)

        process._restart = restart  # type: ignore[method-assign]
        for _ in range(3):  # dies, and dies again before it is ready: a crash loop
            process._closed(process._generation)
            await asyncio.sleep(0)
        process._read(process._generation, WorkerReady("m", "fill-mask", "cpu", "float32", 1.0))
        process._closed(process._generation)  # it was ready: replaced at once again
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert delays == [0.0, 0.5, 1.0, 0.0]
