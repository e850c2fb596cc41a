"""The batcher on its own: deadline, size, grouping, budget, cancellation."""

from __future__ import annotations

import time

import pytest

from inferserve.model.batching import Batch, Batcher, WorkItem


def item(request_id: int, group: str = "g", tokens: int = 1, deadline: float | None = None, index: int = 0) -> WorkItem:
    now = time.monotonic()
    return WorkItem(
        request_id=request_id, index=index, group=group, arrival=now,
        deadline=deadline if deadline is not None else now + 60, tokens=tokens,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queued(clock: FakeClock, request_id: int, **kwargs) -> WorkItem:
    work = item(request_id, **kwargs)
    work.arrival = clock.now
    work.deadline = clock.now + 60
    return work


def next_batch(batcher: Batcher) -> Batch:
    """The batch due now (the worker takes one only once ``due_in`` says 0)."""
    assert batcher.due_in() == 0.0
    return batcher.take()


def test_closes_at_max_size_without_waiting_for_the_deadline() -> None:
    batcher = Batcher(max_size=4, max_delay_s=10.0, adaptive_wait=False)
    for i in range(6):
        batcher.put(item(i))
    batch = next_batch(batcher)
    assert [i.request_id for i in batch.items] == [0, 1, 2, 3]
    assert len(batcher) == 2


def test_deadline_counts_from_the_first_arrival() -> None:
    clock = FakeClock()
    batcher = Batcher(max_size=8, max_delay_s=0.2, adaptive_wait=False, clock=clock)
    assert batcher.due_in() is None  # empty: nothing to wait for, the worker blocks on its pipe
    batcher.put(queued(clock, 1))
    assert batcher.due_in() == pytest.approx(0.2)
    for i in range(2, 5):
        clock.now += 0.05
        batcher.put(queued(clock, i))
        # Closed by the first item's clock, not pushed back by each new arrival.
        assert batcher.due_in() == pytest.approx(0.2 - 0.05 * (i - 1))
    clock.now += 0.051
    assert [i.request_id for i in next_batch(batcher).items] == [1, 2, 3, 4]
    assert batcher.due_in() is None


def test_adaptive_wait_does_not_hold_a_lone_request() -> None:
    batcher = Batcher(max_size=8, max_delay_s=5.0, adaptive_wait=True)
    batcher.put(item(1))
    assert len(next_batch(batcher).items) == 1


def test_adaptive_wait_waits_for_as_many_as_the_last_batch() -> None:
    clock = FakeClock()
    batcher = Batcher(max_size=8, max_delay_s=5.0, adaptive_wait=True, clock=clock)
    for i in range(3):
        batcher.put(queued(clock, i))
    assert len(next_batch(batcher).items) == 3  # first batch: nothing to go by
    batcher.put(queued(clock, 10))
    clock.now += 0.1
    assert batcher.due_in() == pytest.approx(4.9)  # 1 of 3: wait
    batcher.put(queued(clock, 11))
    batcher.put(queued(clock, 12))
    assert [i.request_id for i in next_batch(batcher).items] == [10, 11, 12]


def test_fixed_wait_holds_a_lone_request_until_the_delay() -> None:
    clock = FakeClock()
    batcher = Batcher(max_size=8, max_delay_s=0.005, adaptive_wait=False, clock=clock)
    batcher.put(queued(clock, 1))
    assert batcher.due_in() == pytest.approx(0.005)
    clock.now += 0.006
    assert [i.request_id for i in next_batch(batcher).items] == [1]


def test_groups_by_parameters_never_mixes_them() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0)
    batcher.put(item(1, group="a"))
    batcher.put(item(2, group="b"))
    batcher.put(item(3, group="a"))
    first = next_batch(batcher)
    second = next_batch(batcher)
    assert [i.request_id for i in first.items] == [1, 3]
    assert [i.request_id for i in second.items] == [2]


def test_token_budget_bounds_padded_tokens() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0, max_tokens=100)
    for i, tokens in enumerate([10, 10, 60, 10]):
        batcher.put(item(i, tokens=tokens))
    first = next_batch(batcher)
    # 3 x 60 = 180 > 100: the long one waits for the next batch, and the short
    # one that arrived after it joins this one instead
    assert [i.request_id for i in first.items] == [0, 1, 3]
    assert first.padded_tokens == 30
    second = next_batch(batcher)
    assert [i.request_id for i in second.items] == [2]


def test_similar_lengths_are_batched_together() -> None:
    batcher = Batcher(max_size=3, max_delay_s=0.0)
    for i, tokens in enumerate([50, 5, 48, 6, 52, 4]):
        batcher.put(item(i, tokens=tokens))
    first = next_batch(batcher)
    # The short ones cost under half the long ones' batch: they go first
    # (batch_choice: a short batch may go ahead of the oldest, once).
    assert [i.request_id for i in first.items] == [1, 3, 5]
    second = next_batch(batcher)
    assert [i.request_id for i in second.items] == [0, 2, 4]  # the oldest, then its length peers
    assert first.padded_tokens + second.padded_tokens == 3 * 52 + 3 * 6


def test_a_single_item_over_budget_still_runs_alone() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0, max_tokens=10)
    batcher.put(item(1, tokens=50))
    assert [i.request_id for i in next_batch(batcher).items] == [1]


def test_expired_items_are_separated_not_computed() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0)
    batcher.put(item(1, deadline=time.monotonic() - 1))
    batcher.put(item(2))
    batch = next_batch(batcher)
    assert [i.request_id for i in batch.items] == [2]
    assert [i.request_id for i in batch.expired] == [1]


def test_discard_drops_every_item_of_a_request() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0)
    batcher.put(item(1, index=0))
    batcher.put(item(1, index=1))
    batcher.put(item(2))
    assert batcher.discard(1) == 2
    assert [i.request_id for i in next_batch(batcher).items] == [2]


def test_close_makes_the_queue_due_at_once_and_refuses_more() -> None:
    batcher = Batcher(max_size=8, max_delay_s=10.0, adaptive_wait=False)
    batcher.put(item(1))
    assert batcher.due_in() > 1.0
    batcher.close()
    assert [i.request_id for i in next_batch(batcher).items] == [1]
    assert batcher.due_in() is None
    with pytest.raises(LookupError):
        batcher.take()
    with pytest.raises(RuntimeError):
        batcher.put(item(2))


def test_a_query_goes_ahead_of_queued_passages_once_then_the_oldest() -> None:
    from inferserve.model.cost_model import CostModel

    clock = FakeClock()
    cpu = CostModel(fixed_ms=5.8, per_token_ms=0.07, per_token_squared_ms=0.0001)
    batcher = Batcher(max_size=32, max_delay_s=0.0, clock=clock, cost_model=cpu)
    for i, tokens in enumerate([200, 150, 210, 90, 180]):
        batcher.put(queued(clock, i, tokens=tokens))
    clock.now += 0.01
    batcher.put(queued(clock, 100, tokens=12))  # a query, behind five passages
    first = [i.request_id for i in next_batch(batcher).items]
    assert 100 in first and 0 not in first  # with the 90-token passage, less than half the oldest's 200
    batcher.put(queued(clock, 101, tokens=12))  # another: never two jumps in a row
    assert 0 in [i.request_id for i in next_batch(batcher).items]


def test_no_jump_when_the_oldest_would_miss_its_deadline() -> None:
    from inferserve.model.cost_model import CostModel

    clock = FakeClock()
    cpu = CostModel(fixed_ms=5.8, per_token_ms=0.07, per_token_squared_ms=0.0001)
    batcher = Batcher(max_size=32, max_delay_s=0.0, clock=clock, cost_model=cpu)
    oldest = queued(clock, 0, tokens=200)
    oldest.deadline = clock.now + 0.002  # 2 ms left: less than the query's batch (~6.7 ms)
    batcher.put(oldest)
    batcher.put(queued(clock, 1, tokens=12))
    assert [i.request_id for i in next_batch(batcher).items][0] == 0
