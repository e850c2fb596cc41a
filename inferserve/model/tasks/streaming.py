"""The streaming task: text generation whose tokens leave as they are made.

Each stream runs the pipeline's own stages (preprocess, forward = generate,
postprocess) on a thread of its own, with a streamer that sends one
StreamChunk per new token and a stopping criterion that ends generation
when the client goes away or the deadline passes. Concurrent streams are
interleaved (each thread generates while the others wait on torch), up to
``max_concurrent`` at once; more wait their turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ...ipc import MAX_ERROR_MESSAGE, FromWorker, InferRequest, InferResult, Outcome, StreamChunk
from ..errors import ParametersRejected

log = logging.getLogger("inferserve.worker")


class _ChunkStreamer(BaseStreamer):
    """Turns generate()'s token callbacks into StreamChunk messages."""

    def __init__(self, request_id: int, tokenizer: Any, send: Callable[[FromWorker], None],
                 decode_kwargs: dict[str, Any]) -> None:
        self._request_id = request_id
        self._tokenizer = tokenizer
        self._send = send
        self._decode_kwargs = decode_kwargs
        self._prompt_seen = False
        self._ids: list[int] = []
        self._text = ""

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self._ids.append(int(token_id))
            # Decode everything so far and send the difference: word pieces
            # and spacing come out as the final text will have them.
            text = self._tokenizer.decode(self._ids, **self._decode_kwargs)
            delta = text[len(self._text):] if text.startswith(self._text) else text
            self._text = text
            self._send(StreamChunk(self._request_id, len(self._ids) - 1, int(token_id), delta))

    @property
    def count(self) -> int:
        return len(self._ids)

    def end(self) -> None:
        pass


class _StopWhen(StoppingCriteria):
    def __init__(self, cancelled: threading.Event, deadline: float) -> None:
        self._cancelled = cancelled
        self._deadline = deadline

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        stop = self._cancelled.is_set() or time.monotonic() > self._deadline
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class StreamingTask:
    def __init__(
        self, pipe: Any, parse_params: Callable[[dict[str, Any]], Any], send: Callable[[FromWorker], None],
        max_concurrent: int = 4,
    ) -> None:
        self._pipe = pipe
        self._parse_params = parse_params  # the pipeline task's
        self._send = send
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._cancelled: dict[int, threading.Event] = {}

    def start(self, request: InferRequest) -> None:
        try:
            params = self._parse_params(request.call.params)
        except ParametersRejected as exc:
            self._send(InferResult(request.request_id, Outcome.INVALID_PARAMETERS, message=str(exc)[:MAX_ERROR_MESSAGE]))
            return
        cancelled = threading.Event()
        with self._lock:
            self._cancelled[request.request_id] = cancelled
        threading.Thread(
            target=self._run, args=(request, params, cancelled), name=f"stream-{request.request_id}", daemon=True
        ).start()

    def cancel(self, request_id: int) -> None:
        with self._lock:
            event = self._cancelled.get(request_id)
        if event is not None:
            event.set()

    def _run(self, request: InferRequest, params: Any, cancelled: threading.Event) -> None:
        try:
            with self._slots:
                if cancelled.is_set():
                    return
                result, tokens = self._generate(request, params, cancelled)
            if cancelled.is_set():
                log.info("stream %d cancelled after %d tokens", request.request_id, tokens)
                return  # nobody is listening
            self._send(result)
        except Exception as exc:  # noqa: BLE001 - one stream's failure is its own
            log.warning("stream %d failed: %s", request.request_id, exc)
            self._send(InferResult(request.request_id, Outcome.INVALID_INPUT, message=str(exc)[:MAX_ERROR_MESSAGE]))
        finally:
            with self._lock:
                self._cancelled.pop(request.request_id, None)

    def _generate(self, request: InferRequest, params: Any, cancelled: threading.Event) -> tuple[InferResult, int]:
        started = time.monotonic()
        (prompt,) = request.call.inputs
        model_inputs = self._pipe.preprocess(prompt, **params.preprocess)
        decode_kwargs = {
            "skip_special_tokens": params.postprocess.get("skip_special_tokens", True),
            "clean_up_tokenization_spaces": params.postprocess.get("clean_up_tokenization_spaces"),
        }
        streamer = _ChunkStreamer(request.request_id, self._pipe.tokenizer, self._send, decode_kwargs)
        stop = StoppingCriteriaList([_StopWhen(cancelled, request.deadline)])
        # The same mode as the batch thread's passes on this model (a state a
        # layer creates lazily under inference_mode cannot be updated outside it).
        with torch.inference_mode():
            outputs = self._pipe.forward(model_inputs, streamer=streamer, stopping_criteria=stop, **params.forward)
        if time.monotonic() > request.deadline:
            return InferResult(request.request_id, Outcome.DEADLINE_EXCEEDED, message="deadline exceeded"), streamer.count
        final = self._pipe.postprocess(outputs, **params.postprocess)
        return InferResult(
            request.request_id,
            Outcome.OK,
            body=orjson.dumps(final, option=orjson.OPT_SERIALIZE_NUMPY),
            batch_size=1,
            compute_ms=(time.monotonic() - started) * 1000.0,
        ), streamer.count
