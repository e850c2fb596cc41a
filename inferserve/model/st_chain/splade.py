"""sentence-transformers' SpladePooling on a padded batch: the MLM logits,
masked, through relu then log1p (twice for ``log1p_relu``), pooled over the
tokens by max or sum; optionally only the ``top_k`` largest kept (a
SparseEncoder's ``max_active_dims``)."""

from __future__ import annotations

import torch

from .reader import SpladeSpec


def splade_pool(logits: torch.Tensor, mask: torch.Tensor, spec: SpladeSpec, top_k: int | None = None) -> torch.Tensor:
    """(batch, tokens, vocabulary) logits -> (batch, vocabulary) sparse weights."""
    pooled = torch.stack([_pool_row(real, spec) for real in _real_tokens(logits, mask)])
    if top_k is not None and top_k < pooled.size(1):
        kept = pooled.topk(top_k, dim=1)
        pooled = torch.zeros_like(pooled).scatter_(1, kept.indices, kept.values)
    return pooled


def _real_tokens(logits: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each row's (tokens, vocabulary) logits over its real tokens (one side
    padded): the passes below touch no padding. sentence-transformers masks
    the padding to 0 instead, which relu and log1p keep at 0: it adds
    nothing to a sum, and relu makes it and a negative max alike."""
    starts = mask.to(torch.int32).argmax(dim=1).tolist()
    counts = mask.sum(dim=1).tolist()
    return [logits[row, start:start + count] for row, (start, count) in enumerate(zip(starts, counts))]


def _pool_row(real: torch.Tensor, spec: SpladeSpec) -> torch.Tensor:
    if spec.pooling == "sum":
        return _activate(real, spec).sum(dim=0)
    if not len(real):
        return real.new_zeros(real.size(1))
    # relu and log1p never fall, so the max over tokens comes first and they
    # run on one (vocabulary,) vector: the same values, two passes fewer.
    return _activate(real.amax(dim=0), spec)


def _activate(values: torch.Tensor, spec: SpladeSpec) -> torch.Tensor:
    weights = torch.log1p(torch.relu(values))
    return torch.log1p(weights) if spec.activation == "log1p_relu" else weights
