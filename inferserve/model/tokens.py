"""How many tokens one input may have."""

from __future__ import annotations

from typing import Any

# A tokenizer's model_max_length above this is transformers' "unset" sentinel.
_UNSET_MAX_LENGTH = 1_000_000


def token_limit(tokenizer: Any, model_config: Any, *more: int | None) -> int | None:
    """The most tokens one input may have: the smallest of what the tokenizer,
    the position embeddings and any further limit allow (None: none known)."""
    limits = [getattr(tokenizer, "model_max_length", None),
              getattr(model_config, "max_position_embeddings", None), *more]
    usable = [n for n in limits if isinstance(n, int) and 0 < n < _UNSET_MAX_LENGTH]
    return min(usable, default=None)
