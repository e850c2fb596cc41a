"""The requests a worker has accepted and not yet answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ipc import MAX_ERROR_MESSAGE, InferRequest, InferResult, Outcome
from .batching import WorkItem


@dataclass
class RequestState:
    request: InferRequest
    task: Any  # the BatchTask computing it
    options: Any  # its plan's options
    arrival: float
    outputs: list[Any]
    remaining: int
    tokens: int = 0
    batch_size: int = 0
    first_start: float | None = None
    last_start: float | None = None  # the batch last counted in compute_ms
    compute_ms: float = 0.0


class RequestTracker:
    """Requests the worker has accepted and not yet answered.

    Owned by the model thread (no lock); whoever pops a request sends its
    one and only answer.
    """

    def __init__(self) -> None:
        self._states: dict[int, RequestState] = {}

    def add(self, request: InferRequest, task: Any, options: Any, arrival: float, tokens: int) -> None:
        count = len(request.call.inputs)
        state = RequestState(
            request=request,
            task=task,
            options=options,
            arrival=arrival,
            outputs=[None] * count,
            remaining=count,
            tokens=tokens,
        )
        self._states[request.request_id] = state

    def get(self, request_id: int) -> RequestState | None:
        return self._states.get(request_id)

    def is_live(self, request_id: int) -> bool:
        return request_id in self._states

    def cancel(self, request_id: int) -> bool:
        return self._states.pop(request_id, None) is not None

    def fail(self, request_id: int, outcome: Outcome, message: str) -> InferResult | None:
        state = self._states.pop(request_id, None)
        if state is None:
            return None
        return InferResult(
            request_id=request_id,
            outcome=outcome,
            message=message[:MAX_ERROR_MESSAGE],
            batch_size=state.batch_size,
        )

    def complete(
        self, item: WorkItem, output: Any, batch_size: int, started: float, compute_ms: float
    ) -> RequestState | None:
        """Record one output; returns the state once every input is done."""
        state = self._states.get(item.request_id)
        if state is None:
            return None
        state.outputs[item.index] = output
        state.remaining -= 1
        state.batch_size = max(state.batch_size, batch_size)
        if state.last_start != started:  # count each batch once, however many of its inputs it held
            state.compute_ms += compute_ms
            state.last_start = started
        if state.first_start is None:
            state.first_start = started
        if state.remaining:
            return None
        del self._states[item.request_id]
        return state
