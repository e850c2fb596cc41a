"""Deadline-bounded dynamic batching: the worker's pending queue.

The worker's model thread ``put``s the items it reads from the pipe and
asks ``due_in`` when the next batch is due: a batch closes at
``first_arrival + max_delay`` or at ``max_size`` items, whichever comes
first. The clock is that of the oldest queued item, so items that queued up
while the model was busy form the next batch at once. The batcher never
waits itself: the model thread waits on the pipe until ``due_in`` (no
polling), so an arrival and a deadline wake the same thread. One thread
owns a batcher; it has no lock.

Items only share a batch with items of the same ``group`` (same pipeline
parameters). Which of a group's items go is ``batch_choice.choose_batch``'s
decision, priced by the model's cost model: the oldest always, then the
inputs that make the batch finish the most work per second. An optional
token budget bounds ``count x longest`` on top.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from .batch_choice import choose_batch
from .cost_model import DEFAULT_COST_MODEL, CostModel

# The batch is chosen among this many times max_size of the oldest items: a
# bounded price per batch however long the queue, and the rest wait anyway.
_LOOKAHEAD = 4


@dataclass(slots=True)
class WorkItem:
    """One input of one request, as the worker schedules it."""

    request_id: int
    index: int
    group: Hashable
    arrival: float
    deadline: float
    tokens: int = 0
    payload: Any = None  # preprocessed model inputs


@dataclass(frozen=True, slots=True)
class Batch:
    items: list[WorkItem]
    # Items whose request deadline had passed when the batch formed: they are
    # answered with a timeout and never computed.
    expired: list[WorkItem]

    @property
    def padded_tokens(self) -> int:
        return padded_tokens(self.items)


def padded_tokens(items: list[WorkItem]) -> int:
    """What a batch costs once padded: count x longest (the token budget's measure)."""
    return len(items) * max((item.tokens for item in items), default=0)


class Batcher:
    def __init__(
        self,
        max_size: int,
        max_delay_s: float,
        max_tokens: int | None = None,
        adaptive_wait: bool = True,
        clock: Callable[[], float] = time.monotonic,
        cost_model: CostModel = DEFAULT_COST_MODEL,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._max_size = max_size
        self._max_delay_s = max(0.0, max_delay_s)
        self._max_tokens = max_tokens
        # Adaptive: wait for the delay only while fewer items are queued than
        # the previous batch held. A lone client (previous batch of 1) is
        # never held back; a steady crowd still fills its batches.
        self._adaptive_wait = adaptive_wait
        self._clock = clock
        self._cost_model = cost_model
        self._jumped = False  # the last batch went ahead of the oldest item
        self._groups: OrderedDict[Hashable, deque[WorkItem]] = OrderedDict()
        self._queued = 0
        self._last_batch_size = 0
        self._closed = False

    def put(self, item: WorkItem) -> None:
        if self._closed:
            raise RuntimeError("batcher is closed")
        self._groups.setdefault(item.group, deque()).append(item)
        self._queued += 1

    def discard(self, request_id: int) -> int:
        """Drop the queued items of a cancelled request; returns how many."""
        dropped = 0
        for key in list(self._groups):
            queue = self._groups[key]
            kept = deque(i for i in queue if i.request_id != request_id)
            dropped += len(queue) - len(kept)
            if kept:
                self._groups[key] = kept
            else:
                del self._groups[key]
        self._queued -= dropped
        return dropped

    def close(self) -> None:
        """No more items; whatever is queued is due at once."""
        self._closed = True

    def __len__(self) -> int:
        return self._queued

    def due_in(self) -> float | None:
        """Seconds until the next batch is due: None while nothing is queued,
        0.0 when one is due now (``take`` it)."""
        if not self._groups:
            return None
        _, queue = self._oldest_group()
        if self._closed or len(queue) >= self._wait_target():
            return 0.0
        return max(0.0, queue[0].arrival + self._max_delay_s - self._clock())

    def take(self) -> Batch:
        """The next batch, from the group whose first item is oldest."""
        if not self._groups:
            raise LookupError("no batch is queued")
        return self._take(*self._oldest_group())

    def _oldest_group(self) -> tuple[Hashable, deque[WorkItem]]:
        return min(self._groups.items(), key=lambda kv: kv[1][0].arrival)

    def _wait_target(self) -> int:
        if not self._adaptive_wait:
            return self._max_size
        return max(1, min(self._max_size, self._last_batch_size))

    def _take(self, key: Hashable, queue: deque[WorkItem]) -> Batch:
        now = self._clock()
        expired = [item for item in queue if item.deadline <= now]
        live = [item for item in queue if item.deadline > now]
        items: list[WorkItem] = []
        if live:
            window = live[: _LOOKAHEAD * self._max_size]
            choice = choose_batch(
                [item.tokens for item in window], self._cost_model, self._max_size, self._max_tokens,
                may_jump=not self._jumped, oldest_slack_ms=(window[0].deadline - now) * 1000.0,
            )
            self._jumped = choice.jumped
            items = [window[i] for i in choice.indices]
        taken = {id(item) for item in items} | {id(item) for item in expired}
        remaining = deque(item for item in queue if id(item) not in taken)
        if remaining:
            self._groups[key] = remaining
        else:
            del self._groups[key]
        self._queued -= len(items) + len(expired)
        if items:
            self._last_batch_size = len(items)
        return Batch(items=items, expired=expired)
