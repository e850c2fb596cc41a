"""sentence-transformers' SpladePooling on a padded batch: the MLM logits,
masked, through relu then log1p (twice for ``log1p_relu``), pooled over the
tokens by max or sum; optionally only the ``top_k`` largest kept (a
SparseEncoder's ``max_active_dims``)."""

from __future__ import annotations

import torch

from .reader import SpladeSpec


def splade_pool(logits: torch.Tensor, mask: torch.Tensor, spec: SpladeSpec, top_k: int | None = None) -> torch.Tensor:
    """(batch, tokens, vocabulary) logits -> (batch, vocabulary) sparse weights."""
    masked = logits * mask.unsqueeze(-1).to(logits.dtype)
    if spec.pooling == "max":
        # relu and log1p never fall, so the max over tokens comes first and
        # they run on (batch, vocabulary) alone: the same values, without two
        # more passes over the (batch, tokens, vocabulary) tensor.
        pooled = _activate(masked.amax(dim=1), spec)
    else:
        pooled = _activate(masked, spec).sum(dim=1)
    if top_k is not None and top_k < pooled.size(1):
        kept = pooled.topk(top_k, dim=1)
        pooled = torch.zeros_like(pooled).scatter_(1, kept.indices, kept.values)
    return pooled


def _activate(values: torch.Tensor, spec: SpladeSpec) -> torch.Tensor:
    weights = torch.log1p(torch.relu(values))
    return torch.log1p(weights) if spec.activation == "log1p_relu" else weights
