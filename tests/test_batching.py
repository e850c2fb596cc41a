"""The batcher on its own: deadline, size, grouping, budget, cancellation."""

from __future__ import annotations

import threading
import time

import pytest

from inferserve.batching import Batcher, WorkItem


def item(request_id: int, group: str = "g", tokens: int = 1, deadline: float | None = None, index: int = 0) -> WorkItem:
    now = time.monotonic()
    return WorkItem(
        request_id=request_id, index=index, group=group, arrival=now,
        deadline=deadline if deadline is not None else now + 60, tokens=tokens,
    )


def test_closes_at_max_size_without_waiting_for_the_deadline() -> None:
    batcher = Batcher(max_size=4, max_delay_s=10.0, adaptive_wait=False)
    for i in range(6):
        batcher.put(item(i))
    started = time.monotonic()
    batch = batcher.next_batch()
    assert [i.request_id for i in batch.items] == [0, 1, 2, 3]
    assert time.monotonic() - started < 1.0
    assert len(batcher) == 2


def test_deadline_counts_from_the_first_arrival() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.2, adaptive_wait=False)
    batcher.put(item(1))
    started = time.monotonic()

    def late_arrivals() -> None:
        for i in range(2, 5):
            time.sleep(0.05)
            batcher.put(item(i))

    feeder = threading.Thread(target=late_arrivals)
    feeder.start()
    batch = batcher.next_batch()
    elapsed = time.monotonic() - started
    feeder.join()
    # Closed by the first item's clock, not pushed back by each new arrival.
    assert 0.15 <= elapsed < 0.35
    assert [i.request_id for i in batch.items] == [1, 2, 3, 4]


def test_adaptive_wait_does_not_hold_a_lone_request() -> None:
    batcher = Batcher(max_size=8, max_delay_s=5.0, adaptive_wait=True)
    batcher.put(item(1))
    started = time.monotonic()
    batch = batcher.next_batch()
    assert len(batch.items) == 1
    assert time.monotonic() - started < 1.0


def test_adaptive_wait_waits_for_as_many_as_the_last_batch() -> None:
    batcher = Batcher(max_size=8, max_delay_s=5.0, adaptive_wait=True)
    for i in range(3):
        batcher.put(item(i))
    assert len(batcher.next_batch().items) == 3  # first batch: nothing to go by
    batcher.put(item(10))
    threading.Timer(0.1, lambda: [batcher.put(item(j)) for j in (11, 12)]).start()
    started = time.monotonic()
    batch = batcher.next_batch()
    assert [i.request_id for i in batch.items] == [10, 11, 12]
    assert time.monotonic() - started < 2.0


def test_idle_consumer_blocks_until_work_arrives() -> None:
    batcher = Batcher(max_size=2, max_delay_s=0.0)
    got = []
    consumer = threading.Thread(target=lambda: got.append(batcher.next_batch()))
    consumer.start()
    time.sleep(0.2)
    assert got == []  # still blocked, no batch invented
    batcher.put(item(7))
    consumer.join(2)
    assert [i.request_id for i in got[0].items] == [7]


def test_groups_by_parameters_never_mixes_them() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0)
    batcher.put(item(1, group="a"))
    batcher.put(item(2, group="b"))
    batcher.put(item(3, group="a"))
    first = batcher.next_batch()
    second = batcher.next_batch()
    assert [i.request_id for i in first.items] == [1, 3]
    assert [i.request_id for i in second.items] == [2]


def test_token_budget_bounds_padded_tokens() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0, max_tokens=100)
    for i, tokens in enumerate([10, 10, 60, 10]):
        batcher.put(item(i, tokens=tokens))
    first = batcher.next_batch()
    # 3 x 60 = 180 > 100: the long one waits for the next batch, and the short
    # one that arrived after it joins this one instead
    assert [i.request_id for i in first.items] == [0, 1, 3]
    assert first.padded_tokens == 30
    second = batcher.next_batch()
    assert [i.request_id for i in second.items] == [2]


def test_similar_lengths_are_batched_together() -> None:
    batcher = Batcher(max_size=3, max_delay_s=0.0)
    for i, tokens in enumerate([50, 5, 48, 6, 52, 4]):
        batcher.put(item(i, tokens=tokens))
    first = batcher.next_batch()
    assert [i.request_id for i in first.items] == [0, 2, 4]  # the oldest, then its length peers
    second = batcher.next_batch()
    assert [i.request_id for i in second.items] == [1, 3, 5]
    assert first.padded_tokens + second.padded_tokens == 3 * 52 + 3 * 6


def test_a_single_item_over_budget_still_runs_alone() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0, max_tokens=10)
    batcher.put(item(1, tokens=50))
    assert [i.request_id for i in batcher.next_batch().items] == [1]


def test_expired_items_are_separated_not_computed() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0)
    batcher.put(item(1, deadline=time.monotonic() - 1))
    batcher.put(item(2))
    batch = batcher.next_batch()
    assert [i.request_id for i in batch.items] == [2]
    assert [i.request_id for i in batch.expired] == [1]


def test_discard_drops_every_item_of_a_request() -> None:
    batcher = Batcher(max_size=8, max_delay_s=0.0)
    batcher.put(item(1, index=0))
    batcher.put(item(1, index=1))
    batcher.put(item(2))
    assert batcher.discard(1) == 2
    assert [i.request_id for i in batcher.next_batch().items] == [2]


def test_close_drains_then_returns_none() -> None:
    batcher = Batcher(max_size=8, max_delay_s=10.0, adaptive_wait=False)
    batcher.put(item(1))
    batcher.close()
    assert [i.request_id for i in batcher.next_batch().items] == [1]
    assert batcher.next_batch() is None
    with pytest.raises(RuntimeError):
        batcher.put(item(2))
