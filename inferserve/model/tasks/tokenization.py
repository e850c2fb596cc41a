"""Tokenizer work for text-embeddings-inference's routes, in the worker.

- ``encode_input``: one ``/embed`` or ``/embed_all`` input (text or token
  ids) as the ids the model runs: the sentence-transformers prompt put in
  front, then truncated on the side asked for, or refused when too long.
- ``TokenizerTask``: ``/tokenize`` and ``/decode``, answered as each request
  is read (no batch, no forward pass), on the model thread like every other
  tokenization: tokenizer work never runs on the front-end's event loop.

Answers follow TEI's shapes: ``/tokenize`` gives one list of
``{id, text, special, start, stop}`` per input, offsets in UTF-8 bytes of the
(prompted) input, ``start``/``stop`` null and ``text`` the token itself for
special tokens; ``/decode`` one string per id list.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orjson

from ...ipc import Call, RequestKind
from ..errors import InputRejected, ParametersRejected, too_long

TRUNCATION_DIRECTIONS = ("right", "left")


def read_prompts(model_dir: str) -> dict[str, str]:
    """The ``prompts`` of a sentence-transformers ``config_sentence_transformers.json``."""
    path = os.path.join(model_dir, "config_sentence_transformers.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        prompts = json.load(f).get("prompts") or {}
    return {str(name): str(text) for name, text in prompts.items()}


def prompt_text(prompts: dict[str, str], name: str | None) -> str | None:
    """The text of prompt ``name``; ``ParametersRejected`` for an unknown one."""
    if name is None:
        return None
    if name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise ParametersRejected(f"prompt_name {name!r} is not one of the model's prompts ({known})")
    return prompts[name]


def prompt_length(tokenizer: Any, prompt: str) -> int:
    """How many leading tokens of a prompted input are the prompt's (its
    special start token included), as sentence-transformers counts them for
    a pooling with ``include_prompt: false``: the prompt tokenized alone,
    less a trailing special token."""
    ids = tokenizer(prompt)["input_ids"]
    if ids and ids[-1] in set(tokenizer.all_special_ids):
        return len(ids) - 1
    return len(ids)


def lower_case(tokenizer: Any) -> None:
    """Make a fast tokenizer lower-case its input first, as sentence-transformers
    does for ``do_lower_case`` (a Lowercase normalizer in front of the rest)."""
    from tokenizers.normalizers import Lowercase, Sequence

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        tokenizer.do_lower_case = True
        return
    current = backend.normalizer
    if current is not None and "Lowercase" in repr(current):
        return
    backend.normalizer = Sequence([Lowercase()] + ([current] if current is not None else []))


def encode_input(
    tokenizer: Any,
    value: Any,
    limit: int | None,
    truncate: bool,
    direction: str = "right",
    prompt: str | None = None,
    vocabulary: int | None = None,
) -> list[int]:
    """The ids the model runs for one input: text, or a list of token ids
    (taken as already tokenized, special tokens included; each below
    ``vocabulary``, the model's embedding count, else the tokenizer's size)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value and all(isinstance(i, int) for i in value):
        vocabulary = vocabulary or len(tokenizer)
        if not all(0 <= i < vocabulary for i in value):
            raise InputRejected(f"token ids must be in [0, {vocabulary})")
        if prompt is None:
            return _limited(list(value), limit, truncate, direction)
        # As TEI does: the ids' text, behind the prompt, tokenized afresh.
        text = tokenizer.decode(value, skip_special_tokens=True)
    else:
        raise InputRejected("each input must be a non-empty string or a list of token ids")
    if prompt:
        text = prompt + text
    ids = tokenizer(text, truncation=False)["input_ids"]
    if limit is None or len(ids) <= limit:
        return ids
    if not truncate:
        raise too_long(len(ids), limit)
    # The tokenizer truncates the text and keeps its special tokens; the side
    # is a tokenizer attribute (only the model thread tokenizes: no race).
    side = tokenizer.truncation_side
    tokenizer.truncation_side = direction
    try:
        return tokenizer(text, truncation=True, max_length=limit)["input_ids"]
    finally:
        tokenizer.truncation_side = side


def _limited(ids: list[int], limit: int | None, truncate: bool, direction: str) -> list[int]:
    if limit is None or len(ids) <= limit:
        return ids
    if not truncate:
        raise too_long(len(ids), limit)
    return ids[-limit:] if direction == "left" else ids[:limit]


class TokenizerTask:
    """``/tokenize`` and ``/decode``: the model's tokenizer, no model."""

    def __init__(self, tokenizer: Any, prompts: dict[str, str]) -> None:
        self._tokenizer = tokenizer
        self._prompts = prompts

    def answer(self, call: Call) -> bytes:
        if call.kind is RequestKind.TOKENIZE:
            return self._tokenize(call)
        if call.kind is RequestKind.DECODE:
            return self._decode(call)
        raise ParametersRejected(f"{call.kind.value} is not a tokenizer request")

    def _tokenize(self, call: Call) -> bytes:
        add_special_tokens = bool(call.params.get("add_special_tokens", True))
        prompt = prompt_text(self._prompts, call.params.get("prompt_name"))
        return orjson.dumps([self._tokens((prompt or "") + text, add_special_tokens) for text in call.inputs])

    def _tokens(self, text: str, add_special_tokens: bool) -> list[dict[str, Any]]:
        try:
            encoded = self._tokenizer(
                text,
                add_special_tokens=add_special_tokens,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
        except (NotImplementedError, ValueError, TypeError) as exc:  # e.g. no offsets (slow tokenizer)
            raise InputRejected(f"cannot tokenize: {exc}") from exc
        ids = encoded["input_ids"]
        pieces = self._tokenizer.convert_ids_to_tokens(ids)
        byte_offsets = _byte_offsets(text)
        tokens = []
        for token_id, piece, special, (start, stop) in zip(
            ids, pieces, encoded["special_tokens_mask"], encoded["offset_mapping"]
        ):
            if special:
                tokens.append({"id": token_id, "text": piece, "special": True, "start": None, "stop": None})
            else:
                tokens.append({
                    "id": token_id,
                    "text": text[start:stop],
                    "special": False,
                    "start": byte_offsets[start],
                    "stop": byte_offsets[stop],
                })
        return tokens

    def _decode(self, call: Call) -> bytes:
        skip = bool(call.params.get("skip_special_tokens", True))
        vocabulary = len(self._tokenizer)
        texts = []
        for index, ids in enumerate(call.inputs):
            if not all(0 <= i < vocabulary for i in ids):
                where = "" if call.single else f"ids[{index}]: "
                raise InputRejected(f"{where}token ids must be in [0, {vocabulary})")
            texts.append(self._tokenizer.decode(ids, skip_special_tokens=skip))
        return orjson.dumps(texts)


def _byte_offsets(text: str) -> list[int]:
    """UTF-8 byte offset of each character offset 0..len(text) (TEI's offsets are bytes)."""
    offsets = [0] * (len(text) + 1)
    position = 0
    for index, char in enumerate(text):
        offsets[index] = position
        position += len(char.encode("utf-8", "surrogatepass"))
    offsets[len(text)] = position
    return offsets
