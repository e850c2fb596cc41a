"""sentence-transformers' Pooling, on a padded batch on the device.

The same arithmetic as its ``Pooling._forward_padded`` (in float32): CLS is
the first unmasked token, last-token the last one (right or left padding
alike), weighted-mean weighs the i-th real token i (counted from the first
real one, prompt tokens keep their places), and ``include_prompt: false``
masks each row's prompt tokens out of the pooling.
"""

from __future__ import annotations

import torch

from .reader import PoolingSpec


def exclude_prompts(mask: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
    """``mask`` with each row's first ``prompt_tokens[row]`` real tokens masked out."""
    first_real = mask.to(torch.int32).argmax(dim=1)
    positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
    return mask.masked_fill(positions < (first_real + prompt_tokens).unsqueeze(1), 0)


def pool(hidden: torch.Tensor, mask: torch.Tensor, spec: PoolingSpec,
         prompt_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per row of ``hidden`` (batch, tokens, dim), modes concatenated."""
    original = mask
    if prompt_tokens is not None and not spec.include_prompt:
        mask = exclude_prompts(mask, prompt_tokens)
    vectors = [_pool_one(mode, hidden, mask, original) for mode in spec.modes]
    return vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)


def _pool_one(mode: str, hidden: torch.Tensor, mask: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    if mode == "cls":
        first = mask.to(torch.int32).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), first]
    if mode == "lasttoken":
        values, from_end = mask.flip(1).max(1)
        from_end = torch.where(values == 0, hidden.size(1) - 1, from_end)
        last = hidden.size(1) - from_end - 1
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return hidden[rows, last] * mask[rows, last].unsqueeze(-1).to(hidden.dtype)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    if mode == "weightedmean":
        positions = torch.arange(1, hidden.size(1) + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
        weights = weights * (positions - original.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / counts.sqrt() if mode == "mean_sqrt_len_tokens" else summed / counts
