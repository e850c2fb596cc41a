"""The serve loop's reply side: every answer the worker sends.

Errors answered before any compute go out at once. A batch's answers go
one of two ways, as the serve loop says: under load to the reply thread,
which encodes and sends them while the model runs the next batch (the
batch's report sent first); when nothing else waits, on the model thread
itself (one hand-off fewer), the report riding on the first answer. Why:
docs/design.md#worker-threads.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import replace

import orjson

from ..common.transport import Channel
from ..ipc import MAX_ERROR_MESSAGE, BatchReport, InferResult, Outcome
from .errors import InputRejected, ParametersRejected
from .tracker import RequestState

log = logging.getLogger("inferserve.worker")

# What a batch answers, in its items' order: a failed request's result, or a
# finished request's state (its outputs, still to encode).
Answer = InferResult | RequestState


class Replies:
    """Sends the worker's answers: at once, or through the reply thread.

    ``start`` before the first batch; ``stop`` after the last one flushes
    what the reply thread still holds. ``send`` is safe from any thread;
    the rest is called on the model thread.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        # Finished requests, handed from the model thread to the reply thread.
        self._finished: queue.SimpleQueue[RequestState | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._reply_loop, name="replies", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send what is still queued, then end the reply thread."""
        self._finished.put(None)
        self._thread.join()

    def send(self, result: InferResult | None) -> None:
        if result is not None:
            self._channel.send(result)

    def error(self, request_id: int, outcome: Outcome, message: str) -> None:
        self._channel.send(
            InferResult(request_id=request_id, outcome=outcome, message=message[:MAX_ERROR_MESSAGE])
        )

    def refuse(self, request_id: int, exc: Exception, where: str = "") -> None:
        """Answer a request that failed before any compute: the client's
        input or parameters (422), else our bug (500, logged)."""
        if isinstance(exc, InputRejected):
            self.error(request_id, Outcome.INVALID_INPUT, f"{where}{exc}")
        elif isinstance(exc, ParametersRejected):
            self.error(request_id, Outcome.INVALID_PARAMETERS, str(exc))
        else:
            log.error("request %d failed before batching", request_id, exc_info=exc)
            self.error(request_id, Outcome.INTERNAL, "internal error")

    def batch(self, report: BatchReport, answers: list[Answer], inline: bool) -> None:
        """A batch's report and answers. Inline (nothing else waits): encoded
        and sent here, the report riding on the first answer. Otherwise the
        report goes first, so the front-end has counted the batch before any
        of its answers reaches a client, and the reply thread encodes the
        finished requests while the model runs the next batch."""
        if not inline:
            self._channel.send(report)
            for answer in answers:
                if isinstance(answer, RequestState):
                    self._finished.put(answer)
                else:
                    self._channel.send(answer)
            return
        riding: BatchReport | None = report
        for answer in answers:
            result = self._encode(answer) if isinstance(answer, RequestState) else answer
            if riding is not None:
                result = replace(result, batch=riding)
                riding = None
            self._channel.send(result)
        if riding is not None:  # no answer left this batch (a request's inputs span batches)
            self._channel.send(riding)

    def _reply_loop(self) -> None:
        """The reply thread: encode and send finished requests while the
        model runs the next batch."""
        while (state := self._finished.get()) is not None:
            self._channel.send(self._encode(state))

    def _encode(self, state: RequestState) -> InferResult:
        request = state.request
        try:
            body = state.task.encode(state.outputs, request.call, state.options, state.tokens)
        except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
            log.exception("cannot encode the output of request %d", request.request_id)
            return InferResult(request.request_id, Outcome.INTERNAL, message=f"cannot encode output: {exc}")
        queue_ms = ((state.first_start or state.arrival) - state.arrival) * 1000.0
        return InferResult(
            request_id=request.request_id,
            outcome=Outcome.OK,
            body=body,
            batch_size=state.batch_size,
            queue_ms=queue_ms,
            compute_ms=state.compute_ms,
        )
