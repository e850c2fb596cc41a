"""The task-runner protocol: what the serve loop asks of every task.

A batch task turns a ``Call`` into a plan (its validated options and the
key of the batches it may share), prepares each input as it arrives (on
the model thread, between batches), runs a batch of prepared inputs, and
encodes a finished request's outputs as the JSON body the front-end
writes. A stream task answers a call token by token on its own thread. A
direct task (tokenizer work) answers a call at once, as it is read. The
serve loop only ever talks to these three protocols.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from ...ipc import Call, InferRequest, Outcome

log = logging.getLogger("inferserve.worker")


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A call's validated options, and which batches its inputs may join."""

    options: Any
    group: Hashable


@dataclass(slots=True)
class Prepared:
    """One input, ready for a batch."""

    value: Any  # what the client sent
    features: Any  # the tokenized input (or the value itself)
    tokens: int  # its length, for the token budget
    prompt_tokens: int = 0  # leading tokens a pooling without the prompt leaves out


class BatchTask(Protocol):
    def plan(self, call: Call) -> TaskPlan:
        """Validate the call's parameters (``ParametersRejected``)."""

    def prepare(self, value: Any, options: Any) -> Prepared:
        """Tokenize one input (``InputRejected``)."""

    def prepare_all(self, items: list[tuple[Any, Any]]) -> list[Prepared | Exception]:
        """Tokenize every (input, options) read in one wake-up, in as few
        tokenizer calls as the task can: one item's failure is its own."""

    def run(self, batch: list[Prepared], options: Any) -> list[Any]:
        """One output per item, or the exception that item raised alone."""

    def encode(self, outputs: list[Any], call: Call, options: Any, tokens: int) -> bytes:
        """A finished request's answer: the JSON body."""

    def warmup(self) -> None:
        """Run a dummy batch so the first client does not pay for lazy init."""


def prepared_or_error(prepare: Callable[..., Prepared], *args: Any) -> Prepared | Exception:
    """``prepare(*args)``, or the exception it raised: in ``prepare_all`` one
    input's failure is its own result, which the loop answers."""
    try:
        return prepare(*args)
    except Exception as exc:  # noqa: BLE001 - the loop answers it
        return exc


class PreparesOneByOne:
    """``prepare_all`` for a task whose inputs are prepared one at a time."""

    def prepare_all(self, items: list[tuple[Any, Any]]) -> list[Prepared | Exception]:
        prepare = self.prepare  # type: ignore[attr-defined]
        return [prepared_or_error(prepare, value, options) for value, options in items]


class DirectTask(Protocol):
    def answer(self, call: Call) -> bytes:
        """The JSON body, computed as the request is read: no batch, no model
        (tokenizer work; ``InputRejected``, ``ParametersRejected``)."""


class StreamTask(Protocol):
    def start(self, request: InferRequest) -> None:
        """Answer the request token by token (on a thread of its own)."""

    def cancel(self, request_id: int) -> None:
        """Stop generating for a client that went away."""


def run_isolated(batch: list[Prepared], compute: Callable[[list[Prepared]], list[Any]]) -> list[Any]:
    """``compute(batch)``, bisecting on failure so only guilty items fail.

    Returns one output per item, or the exception that item raised alone.
    An out-of-memory error is handled the same way: halves are smaller.
    """
    try:
        return compute(batch)
    except Exception as exc:  # noqa: BLE001 - isolate, then report per item
        if len(batch) == 1:
            return [exc]
        if is_out_of_memory(exc):
            log.warning("out of memory on a batch of %d: halving it", len(batch))
            _release_cached_device_memory()
        mid = len(batch) // 2
        return run_isolated(batch[:mid], compute) + run_isolated(batch[mid:], compute)


def is_out_of_memory(exc: BaseException) -> bool:
    # Looked up, not imported: torch raised nothing if it was never loaded
    # (the serve loop's in-process tests run fake tasks without it).
    torch = sys.modules.get("torch")
    return (torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)) or "out of memory" in str(exc)


def _release_cached_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def classify_failure(exc: BaseException) -> tuple[Outcome, str]:
    """Which failures are the input's fault (422) and which are ours (500)."""
    from ..errors import InputRejected

    # Looked up, not imported, as torch is above: no pipeline raised if none was loaded.
    pipelines = sys.modules.get("transformers.pipelines.base")
    pipeline_errors = (pipelines.PipelineException,) if pipelines is not None else ()
    if is_out_of_memory(exc):
        return Outcome.INTERNAL, "out of memory, even for this input alone"
    if isinstance(exc, (InputRejected, *pipeline_errors, ValueError, TypeError, KeyError, IndexError)):
        return Outcome.INVALID_INPUT, str(exc) or type(exc).__name__
    return Outcome.INTERNAL, "internal error"
