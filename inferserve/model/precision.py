"""Choose the precision a model runs in, and verify it against float32.

``--dtype auto`` times float32 against the reduced precisions the device
may do well (bfloat16 on CPUs with AVX512-BF16 or AMX; float16 and bfloat16
on CUDA) on a fixed calibration set, and keeps the fastest one whose raw
outputs (hidden states or logits) agree with float32's: every item's cosine
at least ``min_cosine`` and, for heads read through a softmax, no
probability moving by more than ``max_prob_diff``. Otherwise float32 stays.
A forced ``--dtype`` is measured the same way and reported, never refused.
Why these thresholds: docs/design.md#precision.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..common.config import ModelSpec
from ..ipc import PrecisionReport

log = logging.getLogger("inferserve.worker")

# Fixed, varied inputs: short and long, punctuation, numbers, casing.
CALIBRATION_TEXTS = (
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password if I no longer have access to my email?",
    "Inference servers batch requests to keep the accelerator busy.",
    "In 1969, Apollo 11 landed two astronauts on the Moon.",
    "I absolutely loved this film; the acting was superb!",
    "The contract terminates automatically unless renewed in writing 30 days before expiry.",
    "What is the boiling point of water at sea level?",
    "Mitochondria are the powerhouse of the cell, producing ATP through respiration.",
    "ok",
    "Le chat dort sur le canapé depuis ce matin.",
    "Prices rose 3.2% year over year, driven by energy and food costs.",
    "A long sentence that goes on and on, listing apples, pears, plums, cherries, grapes, "
    "melons, lemons and limes, to exercise the longer positions of the model.",
    "Why is the sky blue?",
    "Please summarise the following meeting notes for the engineering team.",
)
# Tasks whose outputs a client reads through a softmax (probabilities).
SOFTMAX_TASKS = frozenset({"fill-mask", "text-classification", "text-ranking", "token-classification",
                           "zero-shot-classification", "question-answering", "text-generation"})
_SPEEDUP_NEEDED = 1.1  # a reduced precision must be at least this much faster to be chosen
_TIMING_REPEATS = 3


@dataclass(frozen=True)
class Gate:
    # ModelSpec's defaults (the --min-cosine/--max-prob-diff flags'): the gate's one home.
    min_cosine: float = ModelSpec.min_cosine
    max_prob_diff: float = ModelSpec.max_prob_diff


@dataclass
class _Agreement:
    min_cosine: float
    max_prob_diff: float | None

    def passes(self, gate: Gate) -> bool:
        return self.min_cosine >= gate.min_cosine and (
            self.max_prob_diff is None or self.max_prob_diff <= gate.max_prob_diff
        )


def reduced_precisions(device: str) -> list[str]:
    """What the device may run faster than float32 (to be timed, not trusted)."""
    import torch

    if device.startswith("cuda"):
        return ["float16", "bfloat16"] if torch.cuda.is_bf16_supported() else ["float16"]
    return ["bfloat16"] if _cpu_has_bf16() else []


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


Timer = Callable[[Any, Any], float]
Finish = Callable[[Any, dict[str, Any]], Any]  # (raw output, features) -> the vectors the client gets


class Calibration:
    """The calibration batch and the float32 torch model's answers to it,
    each computed once: the precision choice and the engine check share them."""

    def __init__(self, pipe: Any, timer: Timer | None = None, finish: Finish | None = None) -> None:
        self.time_forward = timer or _time_forward
        self._pipe = pipe
        self._model = pipe.model  # float32 torch: the reference
        # What the client gets from the raw output (a sentence-transformers
        # chain's pooling and heads): agreement is measured on that.
        self.finish = finish

    @functools.cached_property
    def features(self) -> dict[str, Any] | None:
        return _calibration_features(self._pipe)

    @functools.cached_property
    def reference(self) -> Any:
        return _raw_output(self._model, self.features, self.finish)

    @functools.cached_property
    def reference_ms(self) -> float:
        return self.time_forward(self._model, self.features)

    def agreement(self, candidate: Any, task: str) -> _Agreement:
        """``candidate``'s outputs on the calibration set against float32
        torch's: the final vectors where ``finish`` makes them (a softmax
        then has no meaning), else the raw outputs."""
        return _agreement(self.reference, _raw_output(candidate, self.features, self.finish), self.features,
                          task in SOFTMAX_TASKS and self.finish is None)


def choose_precision(
    pipe: Any, task: str, device: str, requested: str, gate: Gate = Gate(), timer: Timer | None = None,
    calibration: Calibration | None = None,
) -> PrecisionReport:
    """Put ``pipe.model`` in the chosen precision; report what and why."""
    import torch

    if requested == "float32":
        return PrecisionReport("float32", requested, "asked for float32")
    candidates = [requested] if requested != "auto" else reduced_precisions(device)
    if not candidates:
        return PrecisionReport("float32", requested, "float32 kept (no reduced precision this device does well)")
    calibration = calibration or Calibration(pipe, timer)
    features = calibration.features
    if features is None:  # no tokenizer, or an encoder-decoder: nothing to compare
        if requested == "auto":
            return PrecisionReport("float32", requested, "float32 kept: no calibration for this model")
        pipe.model = pipe.model.to(getattr(torch, requested))
        return PrecisionReport(requested, requested, "as asked; not verified: no calibration for this model")
    reference_model = pipe.model
    reference_ms = calibration.reference_ms
    best: tuple[str, Any, _Agreement, float] | None = None
    reasons = []
    for name in candidates:
        candidate = copy.deepcopy(reference_model).to(getattr(torch, name))
        agreement = calibration.agreement(candidate, task)
        elapsed_ms = calibration.time_forward(candidate, features)
        speedup = reference_ms / elapsed_ms if elapsed_ms > 0 else 0.0
        note = f"{name}: {speedup:.2f}x float32's speed, min cosine {agreement.min_cosine:.6f}"
        if agreement.max_prob_diff is not None:
            note += f", max probability change {agreement.max_prob_diff:.2e}"
        reasons.append(note)
        if requested == "auto" and not agreement.passes(gate):
            log.warning("precision %s fails the agreement gate (%s)", name, note)
            continue
        if requested == "auto" and speedup < _SPEEDUP_NEEDED:
            continue
        if best is None or elapsed_ms < best[3]:
            best = (name, candidate, agreement, elapsed_ms)
    if best is None:
        return PrecisionReport("float32", requested, f"float32 kept ({'; '.join(reasons)})")
    name, candidate, agreement, elapsed_ms = best
    pipe.model = candidate
    return PrecisionReport(
        name, requested, "; ".join(reasons), min_cosine=agreement.min_cosine,
        max_prob_diff=agreement.max_prob_diff, speedup=round(reference_ms / elapsed_ms, 3),
    )


def verify_engine(
    pipe: Any, task: str, candidate: Any, gate: Gate, must_be_faster: bool = False, timer: Timer | None = None,
    calibration: Calibration | None = None,
) -> PrecisionReport | None:
    """Swap in ``candidate`` (another engine's model) if its outputs agree
    with the torch model's in float32 (and, with ``must_be_faster``, if it
    runs the calibration set faster); None (and nothing swapped) if not."""
    calibration = calibration or Calibration(pipe, timer)
    features = calibration.features
    if features is None:
        return None
    agreement = calibration.agreement(candidate, task)
    note = f"min cosine {agreement.min_cosine:.6f}"
    if agreement.max_prob_diff is not None:
        note += f", max probability change {agreement.max_prob_diff:.2e}"
    if not agreement.passes(gate):
        log.warning("the engine's outputs fail the agreement gate (%s): serving with torch", note)
        return None
    reference_ms, candidate_ms = calibration.reference_ms, calibration.time_forward(candidate, features)
    speedup = reference_ms / candidate_ms if candidate_ms > 0 else 0.0
    note = f"{speedup:.2f}x torch's speed, {note}"
    if must_be_faster and speedup < _SPEEDUP_NEEDED:
        log.info("the engine is not faster here (%s): serving with torch", note)
        return None
    pipe.model = candidate
    return PrecisionReport("float32", "float32", f"engine verified against torch float32: {note}",
                           min_cosine=agreement.min_cosine, max_prob_diff=agreement.max_prob_diff,
                           speedup=round(speedup, 3))


def agrees(calibration: Calibration, task: str, candidate: Any, gate: Gate) -> bool | None:
    """Whether ``candidate``'s outputs on the calibration set pass ``gate``
    against the float32 torch model's, with no timing (a remembered choice
    is checked so); None where this model has no calibration."""
    if calibration.features is None:
        return None
    return calibration.agreement(candidate, task).passes(gate)


def _calibration_features(pipe: Any) -> dict[str, Any] | None:
    tokenizer = getattr(pipe, "tokenizer", None)
    model = pipe.model
    if tokenizer is None or getattr(model.config, "is_encoder_decoder", False):
        return None
    if tokenizer.pad_token is None:
        tokenizer = copy.copy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    encoded = tokenizer(list(CALIBRATION_TEXTS), padding=True, truncation=True, max_length=64, return_tensors="pt")
    accepted = set(inspect.signature(model.forward).parameters)
    return {k: v.to(model.device) for k, v in encoded.items() if k in accepted}


def _raw_output(model: Any, features: dict[str, Any], finish: Finish | None = None) -> Any:
    import torch

    with torch.inference_mode():
        output = model(**features)
        first = output[0] if isinstance(output, (tuple, list)) else next(iter(output.values()))
        return first.float() if finish is None else finish(first.float(), features)


def _time_forward(model: Any, features: dict[str, Any]) -> float:
    """Milliseconds for one batch of the calibration set plus one lone text."""
    import torch

    lone = {k: v[:1] for k, v in features.items()}
    totals = []
    with torch.inference_mode():
        model(**features)  # warm
        for _ in range(_TIMING_REPEATS):
            started = time.perf_counter()
            model(**features)
            model(**lone)
            if str(getattr(model, "device", "cpu")).startswith("cuda"):
                torch.cuda.synchronize()
            totals.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(totals)


def _agreement(reference: Any, output: Any, features: dict[str, Any], softmax: bool) -> _Agreement:
    """Per item, over its real tokens: cosine, and the largest probability change."""
    import torch

    mask = features.get("attention_mask")
    cosines, prob_diffs = [], []
    for row in range(reference.shape[0]):
        ref, out = reference[row], output[row]
        if mask is not None and ref.dim() >= 2 and ref.shape[0] == mask.shape[1]:
            keep = mask[row].bool()
            ref, out = ref[keep], out[keep]
        cosines.append(float(torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0)))
        if softmax:
            diff = (ref.softmax(dim=-1) - out.softmax(dim=-1)).abs().max()
            prob_diffs.append(float(diff))
    return _Agreement(min(cosines), max(prob_diffs) if softmax else None)
