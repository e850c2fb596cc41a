"""The cost model: timed on a fake clock, fitted, priced (model/cost_model.py)."""

from __future__ import annotations

import pytest

from inferserve.model.cost_model import (
    GRID_LENGTHS, GRID_MAX_TOKENS, GRID_SIZES, CostModel, fit, measure, measure_model,
)

GRID = [(n, L) for n in GRID_SIZES for L in GRID_LENGTHS if n * L <= GRID_MAX_TOKENS]


class FakeForward:
    """A forward pass that advances a fake clock by what ``truth`` says it
    costs, plus whatever noise is scheduled for a shape."""

    def __init__(self, truth: CostModel, slow: dict[tuple[int, int], float] | None = None) -> None:
        self.truth = truth
        self.now = 0.0
        self.calls: list[tuple[int, int]] = []
        self.slow = slow or {}

    def clock(self) -> float:
        return self.now

    def __call__(self, size: int, length: int) -> None:
        self.calls.append((size, length))
        self.now += (self.truth.batch_ms(size, length) + self.slow.get((size, length), 0.0)) / 1000.0


TRUTH = CostModel(fixed_ms=5.8, per_token_ms=0.07, per_token_squared_ms=0.0001)


def test_the_fit_recovers_the_cost_of_a_fake_clock() -> None:
    forward = FakeForward(TRUTH)
    samples = measure(forward, max_length=512, clock=forward.clock)
    assert [(n, L) for n, L, _ in samples] == GRID
    assert len(GRID) >= 6 and max(L for _, L in GRID) == max(GRID_LENGTHS)
    cost = fit(samples)
    assert cost.measured
    assert cost.fixed_ms == pytest.approx(TRUTH.fixed_ms, rel=1e-6)
    assert cost.per_token_ms == pytest.approx(TRUTH.per_token_ms, rel=1e-6)
    assert cost.per_token_squared_ms == pytest.approx(TRUTH.per_token_squared_ms, rel=1e-6)
    assert cost.batch_ms(8, 100) == pytest.approx(TRUTH.batch_ms(8, 100))


def test_every_shape_is_run_untimed_once_before_it_is_timed() -> None:
    forward = FakeForward(TRUTH)
    measure(forward, max_length=None, clock=forward.clock)
    assert forward.calls[0] == forward.calls[1]  # the warm run, then the timed ones
    assert len(forward.calls) == len(GRID) * 3


def test_lengths_past_the_models_limit_are_not_timed() -> None:
    forward = FakeForward(TRUTH)
    samples = measure(forward, max_length=64, clock=forward.clock)
    assert max(L for _, L, _ in samples) == 64


def test_a_sample_slowed_by_a_neighbour_does_not_bend_the_fit() -> None:
    forward = FakeForward(TRUTH, slow={(16, 16): 800.0})  # the machine was busy then, every time
    cost = fit(measure(forward, max_length=512, clock=forward.clock))
    assert cost.fixed_ms == pytest.approx(TRUTH.fixed_ms, rel=1e-3)
    assert cost.per_token_ms == pytest.approx(TRUTH.per_token_ms, rel=1e-3)


def test_no_coefficient_is_negative() -> None:
    # A cost that falls with length fits nothing but a constant.
    samples = [(n, L, 10.0 - L / 100) for n in (1, 4) for L in (16, 64, 256)]
    cost = fit(samples)
    assert min(cost.fixed_ms, cost.per_token_ms, cost.per_token_squared_ms) >= 0.0
    assert cost.per_token_ms == 0.0 and cost.per_token_squared_ms == 0.0
    with pytest.raises(ValueError):
        fit([])


def test_a_real_model_is_timed_and_reported(embedding_model) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(embedding_model).eval()
    measured = measure_model(model, max_length=64)
    assert measured is not None
    cost, report = measured
    assert report.measured and report.samples == len(GRID_SIZES) * 2  # lengths 16 and 64 (16 x 64 = 1024)
    # Not strictly more: a tiny model on a busy box may time as flat as its overhead.
    assert cost.batch_ms(16, 64) >= cost.batch_ms(1, 16) > 0.0
    assert report.fixed_ms == cost.fixed_ms


def test_the_call_is_never_priced_at_nothing() -> None:
    # A fit that finds no fixed cost (noise, or a model this small) keeps half
    # of a lone short input's time as the call's: batching stays worth something.
    forward = FakeForward(CostModel(fixed_ms=0.0, per_token_ms=0.1))
    samples = measure(forward, max_length=512, clock=forward.clock)
    smallest = min(samples, key=lambda s: s[0] * s[1])
    assert smallest[:2] == (1, 16)
    cost = fit(samples)
    assert cost.fixed_ms == pytest.approx(smallest[2] / 2)
    assert cost.per_token_ms == pytest.approx(0.1, rel=0.05)
