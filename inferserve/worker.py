"""The worker process's face: load the model once, report ready, serve.

Spawned by the front-end by name (``inferserve.worker:worker_main``, see
``common.launch``); everything it runs lives in ``inferserve.model`` (this
process's wing). Knows nothing of HTTP.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import time
from typing import Any

from .common.config import BatchPolicy, ModelSpec
from .common.logsetup import configure_logging
from .common.preloaded_starts import forget_helper
from .common.transport import Channel
from .ipc import MAX_ERROR_MESSAGE, CostReport, WorkerFailed, WorkerReady

log = logging.getLogger("inferserve.worker")

_PR_SET_PDEATHSIG = 1


def worker_main(
    pipe_ends: tuple[Any, Any], spec: ModelSpec, policy: BatchPolicy, log_level: str, log_format: str = "text"
) -> None:
    """Process entry point."""
    forget_helper()  # forked from the preloaded helper: end with the front-end, not with it
    _die_with_parent(os.getppid())
    # At a lower priority the model yields at once to the front-end's short
    # bursts (docs/design.md#worker-niceness); 0 unless asked.
    if spec.niceness:
        os.nice(spec.niceness)
    configure_logging(log_level, log_format, role="worker")
    channel = Channel(pipe_ends)
    try:
        # Heavy imports happen here, in the worker process only.
        from .model.loading import load_model
        from .model.tasks import build_tasks

        started = time.perf_counter()
        loaded = load_model(spec)  # times the torch/transformers import itself
        tasks = build_tasks(loaded.pipeline, loaded.task, spec.model, spec.truncate, channel.send,
                            long_inputs=spec.long_inputs)
        warmup_started = time.perf_counter()
        tasks.warmup()
        log.info("warm-up batch ran in %.2fs", time.perf_counter() - warmup_started)
        cost = _measure_cost(loaded, tasks)
    except Exception as exc:  # noqa: BLE001 - report any load failure, then exit
        # One line: the cause is usually the user's (a path, a task, a model
        # we cannot serve); the traceback only with --log-level debug.
        log.error("model failed to load: %s", exc)
        log.debug("model load traceback", exc_info=True)
        channel.send(WorkerFailed(message=str(exc)[:MAX_ERROR_MESSAGE]))
        _exit(channel)
    from .model.serve_loop import ServeLoop

    serve_loop = ServeLoop(channel, tasks, policy, on_cpu=loaded.device == "cpu", cost_model=cost[0])
    channel.send(
        WorkerReady(
            model=spec.model,
            task=loaded.task,
            device=loaded.device,
            dtype=loaded.dtype,
            load_seconds=time.perf_counter() - started,
            facts=tasks.facts,
            precision=loaded.precision,
            engine=loaded.engine,
            cost_model=cost[1],
        )
    )
    serve_loop.serve()
    log.info("worker stopped")
    _exit(channel)


def _measure_cost(loaded: Any, tasks: Any) -> tuple[Any, CostReport]:
    """The batcher's cost model, timed on the loaded model in its chosen
    precision and engine (model/cost_model.py) and remembered beside that
    choice, so a restart does not time it again; the default where it cannot
    be timed (text generation's batches are generate() calls, not one pass)."""
    from .model.cost_model import DEFAULT_COST_MODEL, measure_model, recalled

    remembered = recalled(loaded.choice.extra.get("cost_model")) if loaded.choice is not None else None
    if remembered is not None:
        return remembered
    measured = None if loaded.task == "text-generation" else measure_model(
        loaded.pipeline.model, tasks.facts.max_input_length)
    if measured is not None and loaded.choices is not None:
        loaded.choices.remember_beside(loaded.choice, "cost_model", dataclasses.asdict(measured[1]))
    return measured or (DEFAULT_COST_MODEL, DEFAULT_COST_MODEL.report())


def _exit(channel: Channel) -> None:
    """Close the pipe, flush the log, and end the process without the
    interpreter's teardown: with torch loaded it takes over a second that a
    drain, a restart and every test's stop would wait for, and nothing in
    this process is left to save."""
    channel.close()
    logging.shutdown()
    os._exit(0)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the front-end dies, however it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the pipe's EOF still stops the worker
    if os.getppid() != parent_pid:
        os._exit(0)
