"""Which queued inputs form the next batch: the one that finishes the most
work per second, priced by the model's cost model.

The work of an input is what it would cost at best: in a full batch of
inputs of its own length (its ``item_ms`` and its share of the fixed cost);
a batch costs ``cost.batch_ms(n, longest)``. The batch's efficiency is its
work / its cost: 1.0 when nothing is padded and the batch is full. The oldest input always goes, so nothing starves. For each padded
length L it could have, the batch is the oldest plus the longest inputs of
at most L tokens, added one by one while that raises the efficiency (an
input whose own work is small against L's cost would lower it: a short
input is not padded to a long one's length). The best L wins.

One exception, so that a short query is never stuck behind passages: when
the previous batch went oldest-first, a batch of inputs at most half as
long as the oldest, built the same way around the shortest of them, may go
ahead of it if it costs at most half what the oldest's batch does and the
oldest's deadline still holds after it. The oldest then goes next. Why: docs/design.md#cost-shaped-batches.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .cost_model import CostModel


@dataclass(frozen=True, slots=True)
class Choice:
    indices: list[int]  # positions in the queue given, ascending (arrival order)
    cost_ms: float  # the cost model's price of the batch
    efficiency: float  # its work / its cost
    jumped: bool = False  # a short batch went ahead of the oldest


def choose_batch(
    lengths: Sequence[int],
    cost: CostModel,
    max_size: int,
    max_tokens: int | None = None,
    may_jump: bool = True,
    oldest_slack_ms: float = math.inf,
) -> Choice:
    """The next batch from the queued inputs' ``lengths`` (in arrival order,
    oldest first). ``max_tokens`` bounds size x longest (the oldest alone
    may pass it); ``oldest_slack_ms``: how long until the oldest's deadline."""
    if not lengths:
        raise ValueError("nothing queued")
    oldest_first = _best_around(0, range(len(lengths)), lengths, cost, max_size, max_tokens)
    if may_jump:
        short = [p for p in range(1, len(lengths)) if 2 * lengths[p] <= lengths[0]]
        if short:
            # Around the shortest (of those, the oldest): the queries, not a
            # middling passage that happens to be older than them.
            shortest = min(short, key=lengths.__getitem__)
            ahead = _best_around(shortest, short, lengths, cost, max_size, max_tokens)
            if 2 * ahead.cost_ms <= oldest_first.cost_ms and ahead.cost_ms < oldest_slack_ms:
                return Choice(ahead.indices, ahead.cost_ms, ahead.efficiency, jumped=True)
    return oldest_first


def _best_around(anchor: int, pool: Sequence[int], lengths: Sequence[int], cost: CostModel,
                 max_size: int, max_tokens: int | None) -> Choice:
    """The most efficient batch of ``pool`` that holds ``anchor``."""
    # By length, and among equal lengths newest first: taken from the end,
    # the longest go first and, of one length, the oldest.
    others = sorted((p for p in pool if p != anchor), key=lambda p: (lengths[p], -p))
    other_lengths = [lengths[p] for p in others]
    own = lengths[anchor]
    anchor_work = _work(cost, own, max_size)
    best: tuple[float, float, int, int] | None = None  # (efficiency, cost, end, count) of others[end-count:end]
    for padded in sorted({own, *(n for n in other_lengths if n > own)}):
        room = max_size if max_tokens is None else min(max_size, max_tokens // max(1, padded))
        end = bisect.bisect_right(other_lengths, padded)
        item_ms = cost.item_ms(padded)
        work, batch_ms, count = anchor_work, cost.fixed_ms + item_ms, 0
        # Longest first: each input added brings less work for the same
        # item_ms, so once one lowers the efficiency every later one would.
        while count + 1 < room and count < end:
            more = _work(cost, other_lengths[end - count - 1], max_size)
            if (work + more) * batch_ms < work * (batch_ms + item_ms):
                break
            work, batch_ms, count = work + more, batch_ms + item_ms, count + 1
        efficiency = work / batch_ms if batch_ms > 0 else math.inf
        if best is None or efficiency > best[0]:
            best = (efficiency, batch_ms, end, count)
    assert best is not None
    efficiency, batch_ms, end, count = best
    return Choice(sorted([anchor, *others[end - count:end]]), batch_ms, efficiency)


def _work(cost: CostModel, length: int, max_size: int) -> float:
    """What an input would cost at best: in a full batch of its own length.
    Counting the fixed cost's share keeps short inputs in big batches; a
    model priced at zero (or inputs of no tokens) makes every input one
    unit, and the batch just grows."""
    return cost.item_ms(length) + cost.fixed_ms / max_size or 1e-9
