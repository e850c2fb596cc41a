"""``--long-inputs chunk``: an input past the model's limit, embedded as
windows of the limit, each window a row of the batch, combined into one
vector per input.

An input's ids (special tokens and prompt included) keep their leading
and trailing special tokens in every window; the tokens between are cut
into consecutive pieces (no overlap), so the prompt is in the first window
only, as it is in front of the text. A dense model's windows are combined
by their token-count-weighted mean (before the final normalisation, which
applies to the combined vector); a sparse model's by their maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import Prepared

LONG_INPUT_MODES = ("error", "truncate", "chunk")


@dataclass(frozen=True, slots=True)
class Windows:
    """The features of a chunked input: one id list per window."""

    ids: tuple[list[int], ...]


def special_token_span(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens a tokenizer puts before and after a single text."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for at in range(len(full) - len(bare) + 1):
        if full[at:at + len(bare)] == bare:
            return at, len(full) - at - len(bare)
    return 0, 0


def split_windows(ids: list[int], limit: int, span: tuple[int, int]) -> Windows:
    """``ids`` as windows of at most ``limit`` tokens, each with the input's special tokens."""
    before, after = span
    head, body, tail = ids[:before], ids[before:len(ids) - after], ids[len(ids) - after:] if after else []
    step = max(1, limit - before - after)
    return Windows(tuple(head + body[i:i + step] + tail for i in range(0, len(body), step)))


def expand(batch: list[Prepared]) -> tuple[list[Prepared], list[int] | None]:
    """The batch with each chunked input replaced by its windows, and each
    row's owner (index in ``batch``); None when nothing was chunked."""
    if not any(isinstance(item.features, Windows) for item in batch):
        return batch, None
    rows: list[Prepared] = []
    owners: list[int] = []
    for index, item in enumerate(batch):
        if isinstance(item.features, Windows):
            for number, window in enumerate(item.features.ids):
                # The prompt is in the first window only.
                rows.append(Prepared(item.value, window, len(window), item.prompt_tokens if number == 0 else 0))
                owners.append(index)
        else:
            rows.append(item)
            owners.append(index)
    return rows, owners


def combine(vectors: torch.Tensor, rows: list[Prepared], owners: list[int], count: int, how: str) -> torch.Tensor:
    """One vector per input from its rows': token-weighted ``mean``, or ``max``."""
    index = torch.tensor(owners, device=vectors.device)
    if how == "max":
        out = torch.full((count, vectors.size(1)), float("-inf"), device=vectors.device, dtype=vectors.dtype)
        return out.index_reduce(0, index, vectors, "amax")
    weights = torch.tensor([row.tokens for row in rows], device=vectors.device, dtype=vectors.dtype)
    summed = torch.zeros((count, vectors.size(1)), device=vectors.device, dtype=vectors.dtype)
    summed.index_add_(0, index, vectors * weights.unsqueeze(1))
    totals = torch.zeros(count, device=vectors.device, dtype=vectors.dtype).index_add_(0, index, weights)
    return summed / totals.unsqueeze(1)
