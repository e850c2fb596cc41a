"""TEI's ``/embed_all``: every token's vector for each input, unpooled.

The sentence-embedding task's tokenization (prompt, truncation side) and
forward pass, without the pooling: the answer is ``[[[float]]]``, one list
of token vectors per input, special tokens included, as TEI returns it.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...ipc import Call, EmbedOptions
from .base import Prepared, PreparesOneByOne, TaskPlan, run_isolated
from .embeddings import SentenceEmbeddingTask


class TokenEmbeddingTask(PreparesOneByOne):
    def __init__(self, embedder: SentenceEmbeddingTask) -> None:
        self._embedder = embedder

    def plan(self, call: Call) -> TaskPlan:
        options = self._embedder.plan(call).options  # validates the prompt and the truncation side
        # Tokenization options act per input: every /embed_all request may share a batch.
        return TaskPlan(options, ())

    def prepare(self, value: Any, options: EmbedOptions) -> Prepared:
        return self._embedder.prepare(value, options)

    def run(self, batch: list[Prepared], options: EmbedOptions) -> list[Any]:
        return run_isolated(batch, self._embedder.token_vectors)

    def encode(self, outputs: list[Any], call: Call, options: EmbedOptions, tokens: int) -> bytes:
        return orjson.dumps(outputs, option=orjson.OPT_SERIALIZE_NUMPY)

    def warmup(self) -> None:
        item = self._embedder.prepare("hello world")
        self._embedder.token_vectors([item, item])
