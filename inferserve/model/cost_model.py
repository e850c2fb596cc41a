"""What a batch costs: a forward pass timed at warm-up, fitted per model.

The time of one forward pass over ``n`` inputs padded to ``L`` tokens is
modelled as ``fixed + per_token * n*L + per_token_squared * n*L*L``: a
fixed cost per call (Python, kernel launches), work linear in the padded
tokens, and attention's share, quadratic in the length. The worker times a
small grid of (n, L) once the model is loaded, in its chosen precision and
engine, on its device, and fits the three coefficients by least squares
(none negative). The batcher then prices every batch it could form with
it (model/batch_choice.py). Why: docs/design.md#cost-shaped-batches.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass, replace

from ..ipc import CostReport

log = logging.getLogger("inferserve.worker")

# Small on purpose (it adds to every start), yet it spans lone inputs to
# batches and short inputs to long. Shapes over
# GRID_MAX_TOKENS padded tokens are left out: the slowest, and the line
# through the others already prices them.
GRID_SIZES = (1, 4, 16)
GRID_LENGTHS = (16, 64, 256)
GRID_MAX_TOKENS = 1024
_REPEATS = 2  # the fastest of these, after one untimed run, is the sample


@dataclass(frozen=True, slots=True)
class CostModel:
    fixed_ms: float
    per_token_ms: float
    per_token_squared_ms: float = 0.0
    measured: bool = False  # False: the default guess, never timed

    def batch_ms(self, size: int, length: int) -> float:
        """The predicted time of one forward pass over ``size`` inputs padded to ``length``."""
        return self.fixed_ms + size * self.item_ms(length)

    def item_ms(self, length: int) -> float:
        """What one input of ``length`` tokens adds to a batch of that length."""
        return length * (self.per_token_ms + length * self.per_token_squared_ms)

    def report(self, samples: int = 0, seconds: float = 0.0) -> CostReport:
        return CostReport(fixed_ms=self.fixed_ms, per_token_ms=self.per_token_ms,
                          per_token_squared_ms=self.per_token_squared_ms, measured=self.measured,
                          samples=samples, seconds=round(seconds, 3))


# Until measured: a forward pass's fixed cost worth ~50 tokens, as on a CPU
# for a small encoder; it keeps lengths together and batches full.
DEFAULT_COST_MODEL = CostModel(fixed_ms=1.0, per_token_ms=0.02)

Sample = tuple[int, int, float]  # (size, length, milliseconds)


def fit(samples: Sequence[Sample]) -> CostModel:
    """Coefficients, none negative, by least squares on relative errors (a
    1 ms and a 300 ms sample count alike). A sample over 1.5x its fit was
    slowed by something else on the machine (noise only ever adds time): it
    is dropped and the rest refitted once. The fixed cost is at least half
    the smallest shape's time."""
    kept = list(samples)
    if not kept:
        raise ValueError("no samples to fit")
    cost = _fit_once(kept)
    typical = [s for s in kept if s[2] <= 1.5 * cost.batch_ms(s[0], s[1])]
    if len(kept) > len(typical) >= 4:
        cost = _fit_once(typical)
    # A lone short input's time is mostly the call itself: a noisy fit must
    # not price the call at nothing (batching would then seem worthless).
    smallest = min(kept, key=lambda s: s[0] * s[1])[2]
    if cost.fixed_ms < smallest / 2:
        cost = replace(cost, fixed_ms=smallest / 2)
    return cost


def _fit_once(samples: Sequence[Sample]) -> CostModel:
    """Of the fits over every subset of the three terms with no negative
    coefficient, the one with the smallest residual (seven tiny solves)."""
    import numpy as np

    n = np.array([s[0] for s in samples], dtype=np.float64)
    length = np.array([s[1] for s in samples], dtype=np.float64)
    y = np.array([s[2] for s in samples], dtype=np.float64)
    weight = 1.0 / np.maximum(y, 1e-6)
    columns = np.stack([np.ones_like(n), n * length, n * length * length], axis=1) * weight[:, None]
    target = y * weight
    scale = np.maximum(np.abs(columns).max(axis=0), 1e-300)  # comparable columns: a well-conditioned solve
    best: tuple[float, np.ndarray] | None = None
    for used in itertools.chain.from_iterable(itertools.combinations(range(3), k) for k in (3, 2, 1)):
        picked = list(used)
        solved, *_ = np.linalg.lstsq(columns[:, picked] / scale[picked], target, rcond=None)
        if (solved < 0).any():
            continue
        coefficients = np.zeros(3)
        coefficients[picked] = solved / scale[picked]
        residual = float(((columns @ coefficients - target) ** 2).sum())
        if best is None or residual < best[0] - 1e-12 * max(1.0, residual):
            best = (residual, coefficients)
    if best is None:  # every sample timed at <= 0 (a broken clock): no cost at all
        return CostModel(0.0, 0.0, 0.0, measured=True)
    a, b, c = (float(v) for v in best[1])
    return CostModel(fixed_ms=a, per_token_ms=b, per_token_squared_ms=c, measured=True)


def measure(run: Callable[[int, int], None], max_length: int | None,
            clock: Callable[[], float] = time.perf_counter) -> list[Sample]:
    """Time ``run(size, length)`` over the grid (lengths past the model's
    limit left out): the fastest of a few runs, after an untimed one."""
    lengths = sorted({min(L, max_length) if max_length else L for L in GRID_LENGTHS})
    samples = []
    for size in GRID_SIZES:
        for length in (L for L in lengths if size * L <= GRID_MAX_TOKENS):
            run(size, length)
            times = []
            for _ in range(_REPEATS):
                started = clock()
                run(size, length)
                times.append((clock() - started) * 1000.0)
            samples.append((size, length, min(times)))
    return samples


def recalled(record: Any) -> tuple[CostModel, CostReport] | None:
    """A cost model remembered beside the precision choice (its CostReport as
    a dict), or None where there is none or it does not read back."""
    if not isinstance(record, dict):
        return None
    try:
        report = replace(CostReport(**record), remembered=True)
    except TypeError:
        return None
    cost = CostModel(report.fixed_ms, report.per_token_ms, report.per_token_squared_ms, measured=report.measured)
    log.info("cost model remembered: %.3f ms + %.3g ms x n*L + %.3g ms x n*L^2",
             cost.fixed_ms, cost.per_token_ms, cost.per_token_squared_ms)
    return cost, report


def measure_model(model: object, max_length: int | None) -> tuple[CostModel, CostReport] | None:
    """Time the loaded model (torch, or an engine called like it) and fit;
    None where it cannot be timed this way (e.g. an encoder-decoder)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        max_length = min(max_length or positions, positions)
    started = time.perf_counter()
    try:
        samples = measure(forward_runner(model), max_length)
    except Exception as exc:  # noqa: BLE001 - an optimisation: the default model serves instead
        log.warning("cost model: cannot time this model (%s: %s); using the default", type(exc).__name__, exc)
        return None
    cost = fit(samples)
    seconds = time.perf_counter() - started
    log.info("cost model: %.3f ms + %.3g ms x n*L + %.3g ms x n*L^2 (%d samples in %.2fs)",
             cost.fixed_ms, cost.per_token_ms, cost.per_token_squared_ms, len(samples), seconds)
    return cost, cost.report(samples=len(samples), seconds=seconds)


def forward_runner(model: object) -> Callable[[int, int], None]:
    """``run(size, length)``: one forward pass over a batch of that shape."""
    import torch

    accepted = set(inspect.signature(model.forward).parameters)  # type: ignore[attr-defined]
    device = getattr(model, "device", torch.device("cpu"))
    token = min(1000, max(1, int(getattr(model.config, "vocab_size", 2)) - 1))  # type: ignore[attr-defined]
    synchronize = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def run(size: int, length: int) -> None:
        ids = torch.full((size, length), token, dtype=torch.long, device=device)
        features = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        with torch.inference_mode():
            model(**{k: v for k, v in features.items() if k in accepted})  # type: ignore[operator]
        synchronize()

    return run
