"""The precision gate's view of a sentence-transformers model: the raw
output of the calibration batch turned into what a client gets (pooling,
heads, normalisation; a sparse model's SPLADE weights), so a reduced
precision or another engine is judged on the final vectors."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .heads import build_heads
from .pooling import pool
from .reader import read_chain
from .splade import splade_pool


def final_vectors(model_dir: str, task: str, device: Any) -> Callable[[Any, dict[str, Any]], Any] | None:
    """``finish(raw, features)`` for the calibration, or None where the raw output is what is served."""
    if task not in ("feature-extraction", "sparse-embedding") or not os.path.isdir(model_dir):
        return None
    chain = read_chain(model_dir)
    if task == "sparse-embedding":
        assert chain.splade is not None
        splade = chain.splade
        return lambda logits, features: splade_pool(logits, features["attention_mask"], splade, chain.top_k)
    heads = build_heads(chain.heads, device)

    def finish(hidden: torch.Tensor, features: dict[str, Any]) -> torch.Tensor:
        pooled = pool(hidden, features["attention_mask"], chain.pooling)
        if heads is not None:
            pooled = heads(pooled)
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if chain.normalizes else pooled

    return finish
