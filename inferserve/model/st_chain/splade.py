"""sentence-transformers' SpladePooling on a padded batch: the MLM logits,
masked, through relu then log1p (twice for ``log1p_relu``), pooled over the
tokens by max or sum; optionally only the ``top_k`` largest kept (a
SparseEncoder's ``max_active_dims``)."""

from __future__ import annotations

import torch

from .reader import SpladeSpec


def splade_pool(logits: torch.Tensor, mask: torch.Tensor, spec: SpladeSpec, top_k: int | None = None) -> torch.Tensor:
    """(batch, tokens, vocabulary) logits -> (batch, vocabulary) sparse weights."""
    if spec.pooling == "max":
        # relu and log1p never fall, so the max over tokens comes first and
        # they run on (batch, vocabulary) alone: the same values, without two
        # more passes over the (batch, tokens, vocabulary) tensor.
        pooled = _activate(_max_over_real_tokens(logits, mask), spec)
    else:
        pooled = _activate(logits * mask.unsqueeze(-1).to(logits.dtype), spec).sum(dim=1)
    if top_k is not None and top_k < pooled.size(1):
        kept = pooled.topk(top_k, dim=1)
        pooled = torch.zeros_like(pooled).scatter_(1, kept.indices, kept.values)
    return pooled


def _max_over_real_tokens(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's max over its real tokens (one side padded): one pass over
    them, none over the padding. sentence-transformers takes the max of the
    masked logits, where a padded token counts 0; relu then turns a negative
    max and 0 into the same 0, so the weights are the same."""
    starts = mask.to(torch.int32).argmax(dim=1).tolist()
    counts = mask.sum(dim=1).tolist()
    return torch.stack([logits[row, start:start + count].amax(dim=0) if count else logits.new_zeros(logits.size(2))
                        for row, (start, count) in enumerate(zip(starts, counts))])


def _activate(values: torch.Tensor, spec: SpladeSpec) -> torch.Tensor:
    weights = torch.log1p(torch.relu(values))
    return torch.log1p(weights) if spec.activation == "log1p_relu" else weights
