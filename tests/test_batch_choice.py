"""The batch choice on its own, with a fake cost model: which queued inputs
form the next batch (model/batch_choice.py)."""

from __future__ import annotations

import itertools
import random

import pytest

from inferserve.model.batch_choice import choose_batch
from inferserve.model.cost_model import CostModel

# A CPU: little fixed cost, padding costs in full, attention's share grows with L.
CPU = CostModel(fixed_ms=5.8, per_token_ms=0.07, per_token_squared_ms=0.0001)  # ~MiniLM, bfloat16, 2 cores
# An accelerator: the call is what costs; more rows are nearly free.
GPU = CostModel(fixed_ms=20.0, per_token_ms=0.0005)


def efficiency(lengths: list[int], indices: list[int], cost: CostModel, max_size: int) -> float:
    """Work done per time taken: what the inputs would cost at best (each in
    a full batch of its own length) over what this batch costs."""
    work = sum(cost.item_ms(lengths[i]) + cost.fixed_ms / max_size for i in indices)
    return work / cost.batch_ms(len(indices), max(lengths[i] for i in indices))


def test_long_inputs_form_small_batches_short_ones_large() -> None:
    rng = random.Random(7)
    long = [rng.randint(150, 250) for _ in range(32)]
    short = [rng.randint(8, 16) for _ in range(32)]
    long_batch = choose_batch(long, CPU, max_size=32, may_jump=False)
    short_batch = choose_batch(short, CPU, max_size=32, may_jump=False)
    assert len(long_batch.indices) <= 10
    assert len(short_batch.indices) >= 2 * len(long_batch.indices)
    # Of like length: the long batch pads little.
    padded = max(long[i] for i in long_batch.indices)
    assert sum(long[i] for i in long_batch.indices) / (padded * len(long_batch.indices)) > 0.95


def test_where_the_call_is_what_costs_long_inputs_batch_fully() -> None:
    rng = random.Random(7)
    long = [rng.randint(150, 250) for _ in range(64)]
    assert len(choose_batch(long, GPU, max_size=32, may_jump=False).indices) == 32


def test_inputs_of_one_length_fill_the_batch_oldest_first() -> None:
    choice = choose_batch([40] * 50, CPU, max_size=32)
    assert choice.indices == list(range(32))
    assert not choice.jumped


@pytest.mark.parametrize("seed", range(40))
def test_the_oldest_always_goes_and_the_batch_is_the_most_efficient_one(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(5, 20), rng.randint(20, 300)]) for _ in range(rng.randint(1, 8))]
    lengths[0] = max(lengths[0], 2 * min(lengths))  # often room for a jump
    cost = rng.choice([CPU, GPU])
    max_size = rng.randint(1, 6)
    choice = choose_batch(lengths, cost, max_size=max_size, may_jump=False)
    assert 0 in choice.indices and len(choice.indices) <= max_size
    best = max(
        efficiency(lengths, [0, *rest], cost, max_size)
        for k in range(max_size)
        for rest in itertools.combinations(range(1, len(lengths)), k)
    )
    assert efficiency(lengths, choice.indices, cost, max_size) == pytest.approx(best)
    assert choice.efficiency == pytest.approx(best)


def test_a_query_waits_at_most_one_batch_behind_passages() -> None:
    passages = [200, 190, 210, 205, 180, 220, 195, 185]
    lengths = [*passages, 12, 14]  # the queries arrived last
    first = choose_batch(lengths, CPU, max_size=32, may_jump=True)
    assert first.jumped and first.indices == [8, 9]  # they go ahead of the passages
    rest = [n for i, n in enumerate(lengths) if i not in first.indices]
    # Never twice in a row: the oldest goes next, however short the others.
    second = choose_batch([*rest, 10], CPU, max_size=32, may_jump=False)
    assert 0 in second.indices and not second.jumped


def test_nothing_jumps_ahead_when_it_would_cost_the_oldest_its_deadline() -> None:
    lengths = [200, 190, 12, 14]
    assert choose_batch(lengths, CPU, max_size=32).jumped
    slack_ms = choose_batch([12, 14], CPU, max_size=32).cost_ms  # the jump's own time
    choice = choose_batch(lengths, CPU, max_size=32, oldest_slack_ms=slack_ms)
    assert not choice.jumped and 0 in choice.indices


def test_a_jump_is_only_for_much_shorter_cheaper_inputs() -> None:
    # 150 is more than half of 200: no jump, the oldest's batch goes.
    assert not choose_batch([200, 150, 150], CPU, max_size=32).jumped


def test_the_token_budget_bounds_size_times_longest() -> None:
    lengths = [50] * 10 + [10] * 10
    choice = choose_batch(lengths, GPU, max_size=32, max_tokens=200, may_jump=False)
    assert choice.indices == [0, 1, 2, 3]
    alone = choose_batch([500, 10], GPU, max_size=32, max_tokens=100, may_jump=False)
    assert alone.indices == [0]  # over the budget on its own, it still runs


def test_a_model_priced_at_zero_per_token_just_fills_the_batch() -> None:
    flat = CostModel(fixed_ms=1.0, per_token_ms=0.0)
    assert choose_batch([0] * 10, flat, max_size=4).indices == [0, 1, 2, 3]


def test_an_empty_queue_has_no_batch() -> None:
    with pytest.raises(ValueError):
        choose_batch([], CPU, max_size=4)


def test_a_jump_forms_around_the_shortest_not_a_middling_older_input() -> None:
    # The 90-token passage is older than the query and short enough to jump
    # too; the jump is built around the query, so it does not wait again.
    lengths = [200, 150, 210, 90, 180, 12]
    choice = choose_batch(lengths, CPU, max_size=32)
    assert choice.jumped and 5 in choice.indices
