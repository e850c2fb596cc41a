"""The worker's serve loop in-process: ``ServeLoop`` and its ``Replies``
over a real pipe pair, with a fake task set (no model, no torch).

Each test starts the loop on a thread, talks to it through the front-end's
end of the pipes, and stops it; milliseconds each. A fake task can hold its
batch until the test releases it, so "a request arrives while the model is
busy" is a fact of the test, not a race.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from inferserve.common.config import BatchPolicy
from inferserve.common.transport import Channel, encode_frame, open_pipes
from inferserve.ipc import (
    MAX_ERROR_MESSAGE,
    BatchReport,
    Call,
    CancelRequest,
    InferRequest,
    InferResult,
    Outcome,
    RequestKind,
    StopWorker,
)
from inferserve.model.errors import InputRejected, ParametersRejected
from inferserve.model.serve_loop import ServeLoop
from inferserve.model.tasks import TaskSet
from inferserve.model.tasks.base import Prepared, PreparesOneByOne, TaskPlan

HOLD = "hold"  # an input whose batch waits for the test's release


class FakeTask(PreparesOneByOne):
    """A batch task by the protocol: upper-cases texts. Its inputs name their
    failure: "boom" (our bug), "bad-value" (the input's fault), "" and "!..."
    (refused while preparing), "unencodable"; a call with params {"reject": ...} is
    refused while planning."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.encoded_on: dict[str, str] = {}  # first input -> the thread that encoded its request
        self.release = threading.Event()
        self.holding = threading.Event()

    def plan(self, call: Call) -> TaskPlan:
        reject = call.params.get("reject")
        if reject == "parameters":
            raise ParametersRejected("unknown parameter 'reject'")
        if reject == "bug":
            raise RuntimeError("a bug in plan")
        return TaskPlan(options=None, group="fake")

    def prepare(self, value: Any, options: Any) -> Prepared:
        if value == "":
            raise InputRejected("input is empty")
        if value.startswith("!"):
            raise InputRejected(f"cannot read {value}")
        return Prepared(value=value, features=value, tokens=len(value))

    def run(self, batch: list[Prepared], options: Any) -> list[Any]:
        self.batches.append([p.value for p in batch])
        if any(p.value == HOLD for p in batch):
            self.holding.set()
            assert self.release.wait(5), "the test never released the batch"
        outputs: list[Any] = []
        for p in batch:
            if p.value == "boom":
                outputs.append(RuntimeError("a bug in the model"))
            elif p.value == "bad-value":
                outputs.append(ValueError("this input cannot be computed"))
            else:
                outputs.append(p.value.upper())
        return outputs

    def encode(self, outputs: list[Any], call: Call, options: Any, tokens: int) -> bytes:
        self.encoded_on[call.inputs[0]] = threading.current_thread().name
        if outputs[0] == "UNENCODABLE":
            raise TypeError("not JSON serializable")
        return orjson.dumps(outputs[0] if call.single else outputs)

    def warmup(self) -> None:
        pass


class FakeTokenizer:
    """A direct task: answered as read, without a batch."""

    def answer(self, call: Call) -> bytes:
        if not call.inputs[0]:
            raise InputRejected("nothing to tokenize")
        return orjson.dumps([len(text) for text in call.inputs])


class FakeStream:
    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def start(self, request: InferRequest) -> None:
        raise AssertionError("no test streams")

    def cancel(self, request_id: int) -> None:
        self.cancelled.append(request_id)


class LoopUnderTest:
    """A ServeLoop on a thread; the test holds the front-end's channel."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.task = FakeTask()
        self.stream = FakeStream()
        tasks = TaskSet(name="fake-task", batch={RequestKind.PIPELINE: self.task}, stream=self.stream,
                        direct={RequestKind.TOKENIZE: FakeTokenizer()})
        front_ends, worker_ends = open_pipes(multiprocessing)
        self.front = Channel(front_ends)
        self._worker = Channel(worker_ends)
        self.loop = ServeLoop(self._worker, tasks, policy, on_cpu=False)
        self.thread = threading.Thread(target=self.loop.serve, name="model", daemon=True)
        self.thread.start()
        self._ids = iter(range(1, 1_000_000))
        self.pending: list[Any] = []  # read from the pipe, not yet taken by a test

    def request(self, *inputs: Any, single: bool = False, kind: RequestKind = RequestKind.PIPELINE,
                params: dict[str, Any] | None = None, deadline_s: float = 30.0) -> int:
        request_id = next(self._ids)
        call = Call(kind, tuple(inputs), params or {}, single=single)
        self.front.send(InferRequest(request_id, call, time.monotonic() + deadline_s))
        return request_id

    def messages(self, results: int, timeout: float = 5.0) -> list[Any]:
        """Everything the loop sends until ``results`` InferResults have come."""
        end = time.monotonic() + timeout
        while sum(isinstance(m, InferResult) for m in self.pending) < results:
            left = end - time.monotonic()
            assert left > 0, f"waited for {results} answers, got {self.pending}"
            self.pending.extend(self.front.receive(timeout=left))
        got, self.pending = self.pending, []
        return got

    def answers(self, count: int) -> dict[int, InferResult]:
        return {m.request_id: m for m in self.messages(count) if isinstance(m, InferResult)}

    def stop(self) -> list[Any]:
        """Stop the loop; what it sent on its way out."""
        self.task.release.set()  # never leave the model thread held
        self.front.send(StopWorker())
        self.thread.join(5)
        assert not self.thread.is_alive(), "the serve loop did not stop"
        self._worker.close()
        rest = self.pending
        try:
            while True:
                rest.extend(self.front.receive(timeout=1))
        except EOFError:
            pass
        self.front.close()
        return rest


@pytest.fixture
def make_loop() -> Iterator[Any]:
    started: list[LoopUnderTest] = []

    def make(**policy: Any) -> LoopUnderTest:
        started.append(LoopUnderTest(BatchPolicy(**{"max_batch_size": 8, **policy})))
        return started[-1]

    yield make
    for loop in started:  # stopped before its pipe closes: an EOF would end the test process
        if loop.thread.is_alive():
            loop.stop()


def test_the_fake_task_set_loads_no_torch() -> None:
    # The layer's point: the loop and its replies run without the model's libraries.
    code = ("import sys, inferserve.model.serve_loop, inferserve.model.replies\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_lone_request_is_answered_with_its_batch_report_riding_on_it(make_loop) -> None:
    loop = make_loop()
    rid = loop.request("abc", single=True)
    [result] = loop.messages(1)  # no BatchReport of its own: it rides on the answer
    assert result.request_id == rid and result.outcome is Outcome.OK
    assert orjson.loads(result.body) == "ABC" and result.batch_size == 1
    assert result.batch is not None and (result.batch.size, result.batch.padded_tokens) == (1, 3)
    assert loop.task.encoded_on["abc"] == "model"  # nothing else waited: no hand-off
    assert loop.stop() == []


def test_a_request_of_several_inputs_is_one_answer_in_input_order(make_loop) -> None:
    loop = make_loop()
    rid = loop.request("a", "bb", "ccc")
    result = loop.answers(1)[rid]
    assert orjson.loads(result.body) == ["A", "BB", "CCC"] and result.batch_size == 3
    assert result.batch is not None and (result.batch.size, result.batch.padded_tokens) == (3, 9)


def test_under_load_the_report_goes_first_and_the_reply_thread_answers(make_loop) -> None:
    loop = make_loop()
    first = loop.request(HOLD, single=True)
    assert loop.task.holding.wait(5)
    second = loop.request("next", single=True)  # waits in the pipe while the model is busy
    loop.task.release.set()
    messages = loop.messages(2)
    # The busy batch's report before its answer; the two answers in either
    # order (the reply thread and the model thread send side by side).
    assert isinstance(messages[0], BatchReport) and messages[0].size == 1
    answers = {m.request_id: m for m in messages[1:]}
    assert answers[first].batch is None  # its batch was reported on its own, first
    assert answers[second].batch is not None and answers[second].batch.size == 1  # nothing waited: inline
    assert loop.task.encoded_on == {HOLD: "replies", "next": "model"}


def test_one_input_that_fails_fails_alone_and_its_batch_neighbours_are_answered(make_loop) -> None:
    loop = make_loop()
    loop.request(HOLD, single=True)
    assert loop.task.holding.wait(5)
    ok, bug, bad = loop.request("ok", single=True), loop.request("boom", single=True), loop.request("bad-value")
    loop.task.release.set()
    answers = loop.answers(4)
    assert loop.task.batches[1] == ["ok", "boom", "bad-value"]  # one batch
    assert answers[ok].outcome is Outcome.OK and answers[ok].batch_size == 3
    assert (answers[bug].outcome, answers[bug].message) == (Outcome.INTERNAL, "internal error")
    assert (answers[bad].outcome, answers[bad].message) == (Outcome.INVALID_INPUT, "this input cannot be computed")


@pytest.mark.parametrize(("send", "outcome", "message"), [
    ({"inputs": ("x",), "params": {"reject": "parameters"}}, Outcome.INVALID_PARAMETERS,
     "unknown parameter 'reject'"),
    ({"inputs": ("x",), "params": {"reject": "bug"}}, Outcome.INTERNAL, "internal error"),
    ({"inputs": ("x", "")}, Outcome.INVALID_INPUT, "inputs[1]: input is empty"),
    ({"inputs": ("",), "single": True}, Outcome.INVALID_INPUT, "input is empty"),
    ({"inputs": ("unencodable",)}, Outcome.INTERNAL, "cannot encode output: not JSON serializable"),
    ({"inputs": ("q",), "kind": RequestKind.RERANK}, Outcome.INVALID_INPUT,
     "this model (fake-task) does not serve rerank requests"),
    ({"inputs": ("q",), "kind": RequestKind.EMBED}, Outcome.INVALID_INPUT,
     "this model (fake-task) does not produce sentence embeddings"),
    ({"inputs": ("",), "kind": RequestKind.TOKENIZE}, Outcome.INVALID_INPUT, "nothing to tokenize"),
], ids=["parameters", "plan-bug", "one-input-of-two", "single-input", "encode", "unserved", "no-embeddings",
        "direct-task"])
def test_a_task_that_raises_answers_its_request_and_the_loop_serves_on(make_loop, send, outcome, message) -> None:
    loop, send = make_loop(), dict(send)
    failed = loop.request(*send.pop("inputs"), **send)
    after = loop.request("still", single=True)
    answers = loop.answers(2)
    assert (answers[failed].outcome, answers[failed].message) == (outcome, message)
    assert orjson.loads(answers[after].body) == "STILL"


def test_a_direct_task_is_answered_at_once_without_a_batch(make_loop) -> None:
    loop = make_loop()
    rid = loop.request("ab", "cde", kind=RequestKind.TOKENIZE)
    [result] = loop.messages(1)
    assert result.request_id == rid and orjson.loads(result.body) == [2, 3]
    assert result.batch is None and loop.task.batches == []


def test_an_error_message_is_cut_to_the_limit(make_loop) -> None:
    loop = make_loop()
    rid = loop.request("!" + "x" * 2000, single=True)
    result = loop.answers(1)[rid]
    assert result.outcome is Outcome.INVALID_INPUT
    assert result.message == ("cannot read " + "!" + "x" * 2000)[:MAX_ERROR_MESSAGE]


def test_cancel_drops_a_queued_request_unanswered(make_loop) -> None:
    # No adaptive wait and a long delay: the request sits in the batcher.
    loop = make_loop(max_batch_delay_ms=10_000, adaptive_wait=False)
    rid = loop.request("never", single=True)
    loop.front.send(CancelRequest(rid))
    assert loop.stop() == []  # stopping would run what is queued: nothing is
    assert loop.task.batches == [] and loop.stream.cancelled == [rid]


def test_stop_runs_what_is_queued_then_refuses_and_returns(make_loop) -> None:
    loop = make_loop(max_batch_delay_ms=10_000, adaptive_wait=False)
    queued = loop.request("queued", single=True)
    late = InferRequest(99, Call(RequestKind.PIPELINE, ("late",), single=True), time.monotonic() + 30)
    # The stop and the request behind it in one write, so one read: the loop
    # cannot finish and return between them.
    os.writev(loop.front.writer_fileno(), [*encode_frame(StopWorker()), *encode_frame(late)])
    answers = loop.answers(2)
    assert orjson.loads(answers[queued].body) == "QUEUED"  # at once, not after the 10 s delay
    assert (answers[99].outcome, answers[99].message) == (Outcome.INTERNAL, "the worker is stopping")
    loop.thread.join(5)
    assert not loop.thread.is_alive()
    assert loop.task.batches == [["queued"]]


def test_a_request_past_its_deadline_is_dropped_before_compute(make_loop) -> None:
    loop = make_loop()
    rid = loop.request("late", single=True, deadline_s=-1.0)
    [result] = loop.messages(1)
    assert (result.request_id, result.outcome) == (rid, Outcome.DEADLINE_EXCEEDED)
    assert result.message == "deadline exceeded before compute" and loop.task.batches == []


def test_a_request_that_expires_behind_a_busy_model_is_never_computed(make_loop) -> None:
    loop = make_loop()
    busy = loop.request(HOLD, single=True)
    assert loop.task.holding.wait(5)
    expiring = loop.request("too-late", single=True, deadline_s=0.05)
    time.sleep(0.1)  # its deadline passes while the model is busy
    loop.task.release.set()
    answers = loop.answers(2)
    assert answers[busy].outcome is Outcome.OK
    assert answers[expiring].outcome is Outcome.DEADLINE_EXCEEDED
    assert loop.task.batches == [[HOLD]]
