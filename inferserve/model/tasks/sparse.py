"""The sparse-embedding task: TEI's ``/embed_sparse`` on a SPLADE model
(sentence-transformers' SparseEncoder: an MLM head, then SpladePooling).

Tokenization, prompts, truncation and batching are the sentence-embedding
task's; the forward pass keeps the MLM logits and pools them with
``st_chain.splade`` (a chunked input's windows combined by max). An answer lists each input's non-zero weights as TEI
does: ``[[{"index": token id, "value": weight}]]``, indices ascending.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import torch

from ...ipc import Call, EmbedOptions
from ..errors import ModelLoadError
from ..st_chain.reader import StChain, read_chain
from ..st_chain.splade import splade_pool
from .base import Prepared
from .embeddings import SentenceEmbeddingTask
from .long_inputs import combine, expand


class SparseEmbeddingTask(SentenceEmbeddingTask):
    def __init__(self, pipe: Any, model_dir: str, truncate: bool = True, chain: StChain | None = None,
                 long_inputs: str | None = None) -> None:
        chain = chain if chain is not None else read_chain(model_dir)
        if chain.splade is None:
            raise ModelLoadError(f"{model_dir!r} has no SpladePooling module: it is not a sparse encoder")
        super().__init__(pipe, model_dir, truncate=truncate, chain=chain, long_inputs=long_inputs)
        self.dimension = int(self._model.config.vocab_size)

    @property
    def pooling_name(self) -> str:
        return "splade"

    def plan(self, call: Call) -> Any:
        plan = super().plan(call)
        return type(plan)(plan.options, "sparse")  # no normalize, no dimensions: one kind of batch

    def encode(self, outputs: list[Any], call: Call, options: EmbedOptions, tokens: int) -> bytes:
        # tolist() makes Python numbers in one C call each: a numpy scalar per
        # entry (int(i), float(v)) cost more than the rest of the answer.
        return orjson.dumps([[{"index": i, "value": v} for i, v in zip(indices.tolist(), values.tolist())]
                             for indices, values in outputs])

    def _embed(self, batch: list[Prepared], normalize: bool | None, dimensions: int | None) -> list[Any]:
        rows = self.vectors(batch, None, None).cpu()
        out = []
        for row in rows:
            indices = torch.nonzero(row, as_tuple=True)[0]
            out.append((indices.numpy(), row[indices].numpy().astype(np.float32)))
        return out

    @torch.inference_mode()
    def vectors(self, batch: list[Prepared], normalize: bool | None, dimensions: int | None) -> torch.Tensor:
        rows, owners = expand(batch)
        logits, mask = self._logits(rows)
        assert self.chain.splade is not None
        pooled = splade_pool(logits, mask, self.chain.splade, self.chain.top_k)
        # A chunked input's windows: their maximum weight per term.
        return pooled if owners is None else combine(pooled, rows, owners, len(batch), "max")

    def _logits(self, batch: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = self._padded(batch)
        return self._model(input_ids=input_ids, attention_mask=mask).logits.float(), mask
