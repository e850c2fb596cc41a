"""The rerank task: a cross-encoder scores (query, text) pairs (``/rerank``,
``/v1/rerank``, ``/v2/rerank``).

A cross-encoder is a sequence-classification model with one label: its one
logit is the pair's relevance. Each (query, text) pair is one item in the
batcher, so one request with 100 texts fills batches with its neighbours'
pairs and respects the token budget like any other input. A score is the
activation sentence-transformers' ``CrossEncoder.predict`` applies to the
logit (the model's ``activation_fn``, sigmoid by default; in float32), or
the logit itself with ``raw_scores``; the answer lists the texts by score,
highest first.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import orjson
import torch

from ...ipc import Call, RerankOptions
from ..errors import ModelLoadError, ParametersRejected
from .base import Prepared, TaskPlan
from .pairs import PairScorer

# Every rerank request may share a batch: options only change how the
# logits are read afterwards, and each item carries its own query.
_GROUP = "rerank"


class RerankTask:
    def __init__(self, pipe: Any, truncate: bool = True, activation: torch.nn.Module | None = None) -> None:
        self._scorer = PairScorer(pipe, truncate=truncate)
        self._activation = activation if activation is not None else torch.nn.Sigmoid()
        if len(self._scorer.labels) != 1:
            raise ModelLoadError(
                f"text-ranking needs a cross-encoder: a sequence-classification model with one label "
                f"(this one has {len(self._scorer.labels)})"
            )
        self.max_tokens = self._scorer.max_tokens

    def plan(self, call: Call) -> TaskPlan:
        options = call.rerank
        if options is None:
            raise ParametersRejected("a rerank request needs a query")
        if options.top_n is not None and options.top_n < 1:
            raise ParametersRejected("top_n must be a positive integer")
        return TaskPlan(options, _GROUP)

    def prepare(self, value: Any, options: RerankOptions) -> Prepared:
        return self._scorer.encode_pair(options.query, value, options.truncate, options.truncate_left)

    def prepare_all(self, items: list[tuple[Any, RerankOptions]]) -> list[Prepared | Exception]:
        """Every (query, document) pair read at once, one tokenizer call per
        truncation setting."""
        results: list[Prepared | Exception | None] = [None] * len(items)
        together: dict[tuple[bool | None, bool], list[int]] = {}
        for index, (_, options) in enumerate(items):
            together.setdefault((options.truncate, options.truncate_left), []).append(index)
        for (truncate, left), indices in together.items():
            pairs = [(items[i][1].query, items[i][0]) for i in indices]
            for i, result in zip(indices, self._scorer.encode_pairs(pairs, truncate, left)):
                results[i] = result
        return results  # type: ignore[return-value]

    def run(self, batch: list[Prepared], options: RerankOptions) -> list[Any]:
        return self._scorer.run(batch)

    def encode(self, outputs: list[Any], call: Call, options: RerankOptions, tokens: int) -> bytes:
        logits = torch.from_numpy(np.stack([row[:1] for row in outputs])[:, 0])  # float32
        scores = (logits if options.raw_scores else self._activation(logits)).tolist()
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
        if options.top_n is not None:
            order = order[: options.top_n]
        if options.response == "cohere":
            return _cohere_document(order, scores, call.inputs, options, tokens)
        ranks = []
        for i in order:
            rank: dict[str, Any] = {"index": i, "score": scores[i]}
            if options.return_text:
                rank["text"] = call.inputs[i]
            ranks.append(rank)
        return orjson.dumps(ranks)

    def warmup(self) -> None:
        for result in self._scorer.run(self._scorer.warmup_items()):
            if isinstance(result, Exception):
                raise result


def _cohere_document(
    order: list[int], scores: list[float], texts: tuple[Any, ...], options: RerankOptions, tokens: int
) -> bytes:
    """Cohere's rerank response (v1 and v2), which Jina's also follows."""
    results = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if options.return_text:
            result["document"] = {"text": texts[i]}
        results.append(result)
    return orjson.dumps({
        "id": str(uuid.uuid4()),
        "model": options.model_name,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},  # Jina's
        "meta": {  # Cohere's
            "api_version": {"version": options.api_version},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        },
    })
