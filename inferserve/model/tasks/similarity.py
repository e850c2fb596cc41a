"""TEI's ``POST /similarity``: the source sentence and each sentence are
batch items like any other (``Call.inputs`` is ``(source, *sentences)``),
embedded as ``/embed`` (or ``/embed_sparse``) would, then scored with the
model's similarity function (``similarity_fn_name``: cosine unless the
model says dot, euclidean or manhattan, as sentence-transformers'
``similarity()``); one score per sentence, in order."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import torch

from ...ipc import Call, EmbedOptions
from .base import Prepared, TaskPlan, run_isolated
from .embeddings import SentenceEmbeddingTask


class SimilarityTask:
    def __init__(self, embedder: SentenceEmbeddingTask) -> None:
        self._embedder = embedder
        self.similarity = embedder.chain.similarity_fn_name

    def plan(self, call: Call) -> TaskPlan:
        options = call.embed or EmbedOptions()
        self._embedder.plan(call)  # validates the prompt and the truncation side
        return TaskPlan(options, ("similarity", options.normalize))

    def prepare(self, value: Any, options: EmbedOptions) -> Prepared:
        return self._embedder.prepare(value, options)

    def prepare_all(self, items: list[tuple[Any, EmbedOptions]]) -> list[Prepared | Exception]:
        return self._embedder.prepare_all(items)

    def run(self, batch: list[Prepared], options: EmbedOptions) -> list[Any]:
        return run_isolated(batch, lambda part: self._vectors(part, options.normalize))

    @torch.inference_mode()
    def _vectors(self, batch: list[Prepared], normalize: bool | None) -> list[np.ndarray]:
        return list(self._embedder.vectors(batch, normalize, None).cpu().numpy())

    def encode(self, outputs: list[Any], call: Call, options: EmbedOptions, tokens: int) -> bytes:
        return orjson.dumps(scores(np.stack(outputs[:1]), np.stack(outputs[1:]), self.similarity)[0].tolist())

    def warmup(self) -> None:
        item = self._embedder.prepare("hello world")
        self._vectors([item, item], None)


def scores(queries: np.ndarray, documents: np.ndarray, function: str) -> np.ndarray:
    """sentence-transformers' ``similarity(queries, documents)`` for ``function``, in float32."""
    a = torch.from_numpy(np.asarray(queries, dtype=np.float32))
    b = torch.from_numpy(np.asarray(documents, dtype=np.float32))
    if function == "cosine":
        a, b = torch.nn.functional.normalize(a, p=2, dim=1), torch.nn.functional.normalize(b, p=2, dim=1)
        return (a @ b.T).numpy()
    if function == "dot":
        return (a @ b.T).numpy()
    if function == "euclidean":
        return (-torch.cdist(a, b, p=2.0)).numpy()
    return (-torch.cdist(a, b, p=1.0)).numpy()  # manhattan
