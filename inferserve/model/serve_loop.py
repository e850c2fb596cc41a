"""The worker's serve loop: read arrivals, batch them, run each batch.

The model thread reads the pipe whenever it is not running a batch: it
plans and prepares each request through its task and queues one WorkItem
per input in the Batcher, then runs whatever batch is due, waiting on the
pipe until the open batch's deadline (no polling). Its answers go out
through ``Replies`` (replies.py: the reply thread, and the report riding on
a batch's first answer); this loop only says whether anything else waits.
Why this split: docs/design.md#worker-threads.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..common.config import BatchPolicy
from ..common.transport import Channel
from ..ipc import (
    BatchReport,
    CancelRequest,
    InferRequest,
    InferResult,
    Outcome,
    RequestKind,
    StopWorker,
)
from .batching import Batch, Batcher, WorkItem, padded_tokens
from .cost_model import DEFAULT_COST_MODEL, CostModel
from .replies import Answer, Replies
from .tasks import TaskSet
from .tasks.base import BatchTask, DirectTask, TaskPlan, classify_failure
from .tracker import RequestTracker

log = logging.getLogger("inferserve.worker")


@dataclass(frozen=True, slots=True)
class _Admission:
    """A request planned by its task, waiting to be tokenized and queued."""

    request: InferRequest
    task: BatchTask
    plan: TaskPlan
    arrival: float


class ServeLoop:
    """The worker's model thread: arrivals in, batches run, answers handed
    to ``Replies``; ``serve`` returns once told to stop and drained."""

    def __init__(self, channel: Channel, tasks: TaskSet, policy: BatchPolicy, on_cpu: bool = True,
                 cost_model: CostModel = DEFAULT_COST_MODEL) -> None:
        self._channel = channel
        # On CPU a forward pass occupies every core: yield one first (below).
        self._yield_before_forward = on_cpu and hasattr(os, "sched_yield")
        self._tasks = tasks
        self._tracker = RequestTracker()
        self._stopping = False
        self._batcher = Batcher(
            max_size=policy.max_batch_size,
            max_delay_s=policy.max_batch_delay_ms / 1000.0,
            max_tokens=policy.max_batch_tokens,
            adaptive_wait=policy.adaptive_wait,
            cost_model=cost_model,
        )
        self._replies = Replies(channel)

    def serve(self) -> None:
        """The model thread: read arrivals, run each batch when it is due,
        until told to stop and the queue is empty."""
        self._replies.start()
        try:
            while not (self._stopping and not len(self._batcher)):
                # Waits only while no batch is due: forever when idle, else
                # until the open batch's deadline. When one is due, arrivals
                # already in the pipe are still read first, to join it.
                self._handle_all(self._channel.receive(timeout=self._batcher.due_in()))
                if self._batcher.due_in() == 0.0:
                    self._run_batch(self._batcher.take())
        except (EOFError, BrokenPipeError):
            # The front-end is gone: nobody is left to answer. Exit at once
            # rather than finish work whose results cannot be delivered.
            os._exit(0)
        self._replies.stop()  # after the last batch: flush the replies, then exit

    # ---- arrivals ------------------------------------------------------------

    def _handle_all(self, messages: list[Any]) -> None:
        """Handle what one read brought, in order; the requests among it are
        tokenized together (one tokenizer call per task where it can),
        before any cancel or stop that follows them."""
        admitted: list[_Admission] = []
        for message in messages:
            if isinstance(message, InferRequest) and not self._stopping:
                admission = self._plan(message)
                if admission is not None:
                    admitted.append(admission)
                continue
            self._queue(admitted)
            admitted = []
            self._handle(message)
        self._queue(admitted)

    def _handle(self, message: Any) -> None:
        if isinstance(message, InferRequest):  # only while stopping: never queue past StopWorker
            self._replies.error(message.request_id, Outcome.INTERNAL, "the worker is stopping")
        elif isinstance(message, CancelRequest):
            if self._tracker.cancel(message.request_id):
                self._batcher.discard(message.request_id)
            if self._tasks.stream is not None:
                self._tasks.stream.cancel(message.request_id)
        elif isinstance(message, StopWorker):
            self._stopping = True
            self._batcher.close()

    def _plan(self, request: InferRequest) -> _Admission | None:
        """The request's task and plan; None once it has been answered
        (a stream or tokenizer request, or refused parameters)."""
        call = request.call
        if call.kind is RequestKind.STREAM:
            self._start_stream(request)
            return None
        direct = self._tasks.direct.get(call.kind)
        if direct is not None:
            self._answer_at_once(request, direct)
            return None
        task = self._tasks.batch.get(call.kind)
        if task is None:
            self._replies.error(request.request_id, Outcome.INVALID_INPUT, self._unserved(call.kind))
            return None
        try:
            plan = task.plan(call)
        except Exception as exc:  # noqa: BLE001 - one request's bug must not stop the worker
            self._replies.refuse(request.request_id, exc)
            return None
        return _Admission(request, task, plan, time.monotonic())

    def _queue(self, admitted: list[_Admission]) -> None:
        """Tokenize the admitted requests' inputs, task by task, and queue them."""
        by_task: dict[int, list[_Admission]] = {}
        for admission in admitted:
            by_task.setdefault(id(admission.task), []).append(admission)
        for group in by_task.values():
            items = [(value, a.plan.options) for a in group for value in a.request.call.inputs]
            results = iter(group[0].task.prepare_all(items))
            for admission in group:
                prepared = [next(results) for _ in admission.request.call.inputs]
                self._enqueue(admission, prepared)

    def _enqueue(self, admission: _Admission, prepared: list[Any]) -> None:
        request, call = admission.request, admission.request.call
        for index, item in enumerate(prepared):
            if isinstance(item, Exception):
                self._replies.refuse(request.request_id, item, "" if call.single else f"inputs[{index}]: ")
                return
        group = (call.kind, admission.plan.group)  # only requests computed the same way share a batch
        self._tracker.add(request, admission.task, admission.plan.options, admission.arrival,
                          tokens=sum(item.tokens for item in prepared))
        for index, item in enumerate(prepared):
            self._batcher.put(
                WorkItem(
                    request_id=request.request_id,
                    index=index,
                    group=group,
                    arrival=admission.arrival,
                    deadline=request.deadline,
                    tokens=item.tokens,
                    payload=item,
                )
            )

    def _answer_at_once(self, request: InferRequest, task: DirectTask) -> None:
        """Tokenizer work (/tokenize, /decode): answered as it is read, between
        batches, without joining one."""
        started = time.monotonic()
        try:
            body = task.answer(request.call)
        except Exception as exc:  # noqa: BLE001 - one request's bug must not stop the worker
            self._replies.refuse(request.request_id, exc)
            return
        compute_ms = (time.monotonic() - started) * 1000.0
        self._replies.send(InferResult(request.request_id, Outcome.OK, body=body, batch_size=1, compute_ms=compute_ms))

    def _unserved(self, kind: RequestKind) -> str:
        if kind in (RequestKind.EMBED, RequestKind.EMBED_ALL):
            return f"this model ({self._tasks.name}) does not produce sentence embeddings"
        return f"this model ({self._tasks.name}) does not serve {kind.value} requests"

    def _start_stream(self, request: InferRequest) -> None:
        if self._tasks.stream is None:
            self._replies.error(request.request_id, Outcome.INVALID_INPUT,
                                f"this model ({self._tasks.name}) does not stream; streaming needs text-generation")
            return
        self._tasks.stream.start(request)

    # ---- batches -------------------------------------------------------------

    def _run_batch(self, batch: Batch) -> None:
        for item in batch.expired:
            self._replies.send(self._tracker.fail(
                item.request_id, Outcome.DEADLINE_EXCEEDED, "deadline exceeded before compute"
            ))
        # A request may have been cancelled or failed since it was queued.
        items = [item for item in batch.items if self._tracker.is_live(item.request_id)]
        if not items:
            return
        first = self._tracker.get(items[0].request_id)
        assert first is not None
        if self._yield_before_forward:
            # The forward pass is about to occupy every core: let what is
            # runnable on this one run now, not midway through the pass
            # (docs/design.md#yield-before-forward).
            os.sched_yield()
        started = time.monotonic()
        outputs = first.task.run([item.payload for item in items], first.options)
        compute_ms = (time.monotonic() - started) * 1000.0
        report = BatchReport(size=len(items), padded_tokens=padded_tokens(items), compute_ms=compute_ms,
                             tokens=sum(item.tokens for item in items))
        answers: list[Answer] = []
        for item, output in zip(items, outputs):
            if isinstance(output, Exception):
                outcome, message = classify_failure(output)
                if outcome is Outcome.INTERNAL:
                    log.error("request %d failed", item.request_id, exc_info=output)
                answer: Answer | None = self._tracker.fail(item.request_id, outcome, message)
            else:  # None while more of its inputs are still to come
                answer = self._tracker.complete(item, output, len(items), started, compute_ms)
            if answer is not None:
                answers.append(answer)
        # Inline when nothing else waits: no next batch for a reply thread to overlap.
        inline = not len(self._batcher) and not self._channel.readable_now()
        self._replies.batch(report, answers, inline)
