"""A sequence-classification model scoring texts and text pairs, batched.

What ``/rerank`` (a cross-encoder's one logit per (query, text) pair) and
``/predict`` (a classifier's logit per label) share: each text or pair is
one batch item, tokenized as the model's own tokenizer pairs it
(``[CLS] a [SEP] b [SEP]`` for BERT), truncated to the model's limit when
asked (the longest of the two first, as the tokenizer's default
``longest_first`` does), padded per batch, and run through the model's own
forward. Logits come back as float32 whatever the weights' dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputRejected, ParametersRejected, too_long
from ..tokens import token_limit
from .base import Prepared, prepared_or_error, run_isolated

_TEXT_KEYS = ("text", "text_pair")


class PairScorer:
    """Tokenize, collate and run (text, text_pair) items; one float32 logit row per item."""

    def __init__(self, pipe: Any, truncate: bool = True) -> None:
        self._model = pipe.model
        self._tokenizer = pipe.tokenizer
        self._device = pipe.device
        self._truncate = truncate
        self.max_tokens = token_limit(self._tokenizer, self._model.config)
        self._pad_id = self._tokenizer.pad_token_id
        self._pad_left = getattr(self._tokenizer, "padding_side", "right") == "left"
        config = self._model.config
        self.labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]

    # ---- per input, as it arrives -----------------------------------------

    def encode_pair(self, text: str, pair: str | None, truncate: bool | None, left: bool) -> Prepared:
        """One item: the pair's token ids (truncated, or rejected when too long)."""
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise InputRejected("each input must be a string or a pair of strings")
        features = self._tokenize(text, pair, None, left)
        tokens = len(features["input_ids"])
        if self.max_tokens is not None and tokens > self.max_tokens:
            if not (self._truncate if truncate is None else truncate):
                what = "the pair is" if pair is not None else "input is"
                raise too_long(tokens, self.max_tokens, what)
            features = self._tokenize(text, pair, self.max_tokens, left)
            tokens = len(features["input_ids"])
        return Prepared(value=(text, pair), features=features, tokens=tokens)

    def encode_pairs(self, pairs: list[tuple[Any, Any]], truncate: bool | None, left: bool) -> list[Prepared | Exception]:
        """``encode_pair`` for many items: one tokenizer call for all of them
        (a rerank request's documents, its neighbours' too); the few too long
        for the model are tokenized again, truncated, one by one."""
        valid = [i for i, (text, pair) in enumerate(pairs)
                 if isinstance(text, str) and (pair is None or isinstance(pair, str))]
        results: list[Prepared | Exception] = [InputRejected("each input must be a string or a pair of strings")] * len(pairs)
        if not valid:
            return results
        texts = [pairs[i][0] for i in valid]
        seconds = [pairs[i][1] for i in valid]
        try:
            encoded = self._tokenizer(texts, seconds if any(p is not None for p in seconds) else None, truncation=False)
        except Exception:  # noqa: BLE001 - e.g. a None pair among pairs: one by one, each its own failure
            for i in valid:
                results[i] = prepared_or_error(self.encode_pair, *pairs[i], truncate, left)
            return results
        keys = [k for k in encoded if k != "attention_mask"]
        for row, i in enumerate(valid):
            tokens = len(encoded["input_ids"][row])
            if self.max_tokens is not None and tokens > self.max_tokens:
                results[i] = prepared_or_error(self.encode_pair, *pairs[i], truncate, left)
            else:
                features = {k: list(encoded[k][row]) for k in keys}
                results[i] = Prepared(value=pairs[i], features=features, tokens=tokens)
        return results

    def _tokenize(self, text: str, pair: str | None, max_length: int | None, left: bool) -> dict[str, list[int]]:
        kwargs: dict[str, Any] = {"truncation": False}
        if max_length is not None:
            kwargs = {"truncation": True, "max_length": max_length}
        side = self._tokenizer.truncation_side
        # The side is tokenizer state, not a call argument; only this (the
        # model) thread tokenizes with it.
        self._tokenizer.truncation_side = "left" if left else "right"
        try:
            encoded = self._tokenizer(text, pair, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tokenizers raise many kinds
            raise InputRejected(str(exc) or type(exc).__name__) from exc
        finally:
            self._tokenizer.truncation_side = side
        return {k: list(v) for k, v in encoded.items() if k != "attention_mask"}

    # ---- per batch (model thread) -----------------------------------------

    def run(self, batch: list[Prepared]) -> list[Any]:
        """One float32 logit row per item, or the exception that item raised alone."""
        return run_isolated(batch, self._forward)

    @torch.inference_mode()
    def _forward(self, batch: list[Prepared]) -> list[np.ndarray]:
        if len(batch) > 1 and self._pad_id is None:  # cannot pad: one at a time
            return [row for item in batch for row in self._forward([item])]
        longest = max(item.tokens for item in batch)
        columns: dict[str, torch.Tensor] = {}
        for key in batch[0].features:
            fill = self._pad_id if key == "input_ids" else 0
            columns[key] = torch.full((len(batch), longest), fill, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, item in enumerate(batch):
            span = slice(longest - item.tokens, longest) if self._pad_left else slice(0, item.tokens)
            for key, ids in item.features.items():
                columns[key][row, span] = torch.tensor(ids, dtype=torch.long)
            mask[row, span] = 1
        inputs = {key: value.to(self._device) for key, value in columns.items()}
        inputs["attention_mask"] = mask.to(self._device)
        logits = self._model(**inputs).logits.float()  # scores in float32 whatever the weights' dtype
        return list(logits.cpu().numpy())

    def warmup_items(self) -> list[Prepared]:
        return [self.encode_pair("hello world", "hello", None, False), self.encode_pair("hello", None, None, False)]


def truncation_options(raw: dict[str, Any]) -> tuple[bool | None, bool]:
    """(truncate, truncate_left) from a request's ``truncate`` and
    ``truncation_direction`` (TEI's names); ``ParametersRejected`` if malformed."""
    truncate = raw.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise ParametersRejected("truncate must be true or false")
    direction = raw.get("truncation_direction") or "right"
    if not isinstance(direction, str) or direction.lower() not in ("left", "right"):
        raise ParametersRejected('truncation_direction must be "left" or "right"')
    return truncate, direction.lower() == "left"


def text_and_pair(value: Any) -> tuple[Any, Any]:
    """An input as (text, text_pair): a string, [text], [text, pair] or {"text", "text_pair"}."""
    if isinstance(value, dict) and set(value) <= set(_TEXT_KEYS) and "text" in value:
        return value["text"], value.get("text_pair")
    if isinstance(value, (list, tuple)) and len(value) in (1, 2):
        return value[0], value[1] if len(value) == 2 else None
    return value, None
