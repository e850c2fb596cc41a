"""The sentence-embedding task: one pooled vector per input (``/embed``,
``/v1/embeddings``).

Follows a sentence-transformers model directory (``st_chain.reader``): the
Pooling module (every mode, either config format, ``include_prompt``), the
heads after it (Dense, LayerNorm, Normalize), ``max_seq_length``,
``do_lower_case``, the prompts and ``default_prompt_name``. Pooling and heads
run on the device, batched, after the transformer (torch or ONNX Runtime's).
The batch is padded on the tokenizer's side (left for decoder embedders).
A plain transformers model (no ``modules.json``) gets mean pooling and no
normalisation. ``--long-inputs chunk`` embeds an input past the limit as
windows (``long_inputs``). TEI's ``/embed_all`` gets every token's vector from the same
forward pass, unpooled (``token_embeddings``).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import torch

from ...ipc import Call, EmbedOptions
from ..errors import InputRejected, ParametersRejected, too_long
from ..st_chain.heads import build_heads, output_dimension
from ..st_chain.pooling import pool
from ..st_chain.reader import StChain, read_chain
from ..tokens import token_limit
from .base import Prepared, TaskPlan, prepared_or_error, run_isolated
from .long_inputs import Windows, combine, expand, special_token_span, split_windows
from .tokenization import TRUNCATION_DIRECTIONS, encode_input, lower_case, prompt_length, prompt_text

# How TEI's /info names each pooling mode.
TEI_POOLING_NAMES = {"cls": "cls", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len", "mean": "mean",
                     "weightedmean": "weightedmean", "lasttoken": "last_token"}


class SentenceEmbeddingTask:
    def __init__(self, pipe: Any, model_dir: str, truncate: bool = True, chain: StChain | None = None,
                 long_inputs: str | None = None) -> None:
        self._model = pipe.model
        self._tokenizer = pipe.tokenizer
        self._device = pipe.device
        # What an over-long input gets when the request does not say (--long-inputs, else --no-truncate).
        self.long_inputs = long_inputs or ("truncate" if truncate else "error")
        self._special_span = special_token_span(self._tokenizer) if self.long_inputs == "chunk" else (0, 0)
        self.chain = chain if chain is not None else read_chain(model_dir)
        if self.chain.do_lower_case:
            lower_case(self._tokenizer)
        self.max_tokens = token_limit(self._tokenizer, self._model.config, self.chain.max_seq_length)
        self._heads = build_heads(self.chain.heads, self._device)
        pooled = int(self._model.config.hidden_size) * len(self.chain.pooling.modes)
        self.dimension = output_dimension(self.chain.heads, pooled)
        self._vocab_size = int(self._model.config.vocab_size)
        self.prompts = dict(self.chain.prompts)
        self.sentence_transformers = self.chain.sentence_transformers
        self._pad_left = getattr(self._tokenizer, "padding_side", "right") == "left"
        # Prompt lengths, for pooling that leaves the prompt out (one per prompt text).
        self._prompt_lengths: dict[str, int] = {}

    @property
    def pooling_name(self) -> str:
        return "+".join(TEI_POOLING_NAMES[mode] for mode in self.chain.pooling.modes)

    def plan(self, call: Call) -> TaskPlan:
        # Options that change how an input is tokenized (truncate, direction,
        # prompt) act in prepare, per input; only those that change the pooled
        # output (normalize, dimensions) keep requests out of each other's batches.
        options = call.embed or EmbedOptions()
        if options.dimensions is not None and not 1 <= options.dimensions <= self.dimension:
            raise ParametersRejected(f"dimensions must be between 1 and {self.dimension}")
        if options.truncation_direction not in TRUNCATION_DIRECTIONS:
            raise ParametersRejected(f"truncation_direction must be one of {', '.join(TRUNCATION_DIRECTIONS)}")
        self.prompt(options)  # an unknown name is refused here
        normalize = self.chain.normalizes if options.normalize is None else options.normalize
        return TaskPlan(options, (normalize, options.dimensions))

    def prompt(self, options: EmbedOptions) -> str | None:
        """The prompt text an input gets: the one named, else the model's default (as ``encode()``)."""
        name = options.prompt_name if options.prompt_name is not None else self.chain.default_prompt_name
        return prompt_text(self.prompts, name)

    def _prompt_tokens(self, prompt: str | None) -> int:
        if not prompt or self.chain.pooling.include_prompt:
            return 0
        if prompt not in self._prompt_lengths:
            self._prompt_lengths[prompt] = prompt_length(self._tokenizer, prompt)
        return self._prompt_lengths[prompt]

    def _long_mode(self, options: EmbedOptions) -> str:
        """error, truncate or chunk: the request's ``truncate`` if it says, else the server's."""
        if options.truncate is None:
            return self.long_inputs
        return "truncate" if options.truncate else "error"

    def prepare(self, value: Any, options: EmbedOptions | None = None) -> Prepared:
        """Text, or a list of token ids (taken as already tokenized)."""
        options = options or EmbedOptions()
        prompt = self.prompt(options)
        mode = self._long_mode(options)
        ids = encode_input(
            self._tokenizer,
            value,
            None if mode == "chunk" else self.max_tokens,
            mode == "truncate",
            options.truncation_direction,
            prompt,
            vocabulary=self._vocab_size,
        )
        return self._prepared(value, ids, self._prompt_tokens(prompt))

    def _prepared(self, value: Any, ids: list[int], prompt_tokens: int) -> Prepared:
        """An input's ids, as windows where they are past the limit (chunk mode only reaches here so)."""
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            windows = split_windows(ids, self.max_tokens, self._special_span)
            return Prepared(value, windows, sum(len(w) for w in windows.ids), prompt_tokens)
        return Prepared(value=value, features=ids, tokens=len(ids), prompt_tokens=prompt_tokens)

    def prepare_all(self, items: list[tuple[Any, EmbedOptions]]) -> list[Prepared | Exception]:
        """Texts truncated on the right (the usual case) in one fast-tokenizer
        call per (truncate, prompt); the rest one by one, as ``prepare``."""
        results: list[Prepared | Exception | None] = [None] * len(items)
        together: dict[tuple[str, str | None], list[int]] = {}
        for index, (value, options) in enumerate(items):
            if isinstance(value, str) and options.truncation_direction == "right":
                try:
                    prompt = self.prompt(options)
                except ParametersRejected as exc:
                    results[index] = exc
                    continue
                together.setdefault((self._long_mode(options), prompt), []).append(index)
            else:
                results[index] = prepared_or_error(self.prepare, value, options)
        for (mode, prompt), indices in together.items():
            truncate = mode == "truncate"
            texts = [(prompt or "") + items[i][0] for i in indices]
            encoded = self._tokenizer(texts, truncation=truncate and self.max_tokens is not None,
                                      max_length=self.max_tokens if truncate else None)["input_ids"]
            prompt_tokens = self._prompt_tokens(prompt)
            for i, ids in zip(indices, encoded):
                if mode == "error" and self.max_tokens is not None and len(ids) > self.max_tokens:
                    results[i] = too_long(len(ids), self.max_tokens)
                else:
                    results[i] = self._prepared(items[i][0], ids, prompt_tokens)
        return results  # type: ignore[return-value]

    def run(self, batch: list[Prepared], options: EmbedOptions) -> list[Any]:
        return run_isolated(batch, lambda part: self._embed(part, options.normalize, options.dimensions))

    def encode(self, outputs: list[Any], call: Call, options: EmbedOptions, tokens: int) -> bytes:
        if options.response == "openai":
            return _openai_document(outputs, options.model_name, tokens, options.encoding_format)
        return _dumps(np.stack(outputs))  # TEI's shape: a list of vectors

    def warmup(self) -> None:
        self._embed([self.prepare("hello world")] * 2, None, None)

    @torch.inference_mode()
    def token_vectors(self, batch: list[Prepared]) -> list[np.ndarray]:
        """``/embed_all``: each item's last hidden state, one vector per token (no padding)."""
        hidden, mask = self._hidden(batch)
        rows = hidden.cpu().numpy()
        longest = rows.shape[1]
        return [np.ascontiguousarray(rows[row, longest - item.tokens:] if self._pad_left else rows[row, : item.tokens])
                for row, item in enumerate(batch)]

    @torch.inference_mode()
    def _embed(self, batch: list[Prepared], normalize: bool | None, dimensions: int | None) -> list[np.ndarray]:
        return list(self.vectors(batch, normalize, dimensions).cpu().numpy())

    def vectors(self, batch: list[Prepared], normalize: bool | None, dimensions: int | None) -> torch.Tensor:
        """The batch's final vectors (float32, on the device): pooled, through the
        heads, a chunked input's windows combined."""
        rows, owners = expand(batch)
        hidden, mask = self._hidden(rows)
        prompt_tokens = None
        if not self.chain.pooling.include_prompt:
            prompt_tokens = torch.tensor([item.prompt_tokens for item in rows], device=mask.device)
        pooled = pool(hidden, mask, self.chain.pooling, prompt_tokens)
        if self._heads is not None:
            pooled = self._heads(pooled)
        if owners is not None:
            pooled = combine(pooled, rows, owners, len(batch), "mean")
        if dimensions is not None:
            pooled = pooled[:, :dimensions]
        if self.chain.normalizes if normalize is None else normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def _hidden(self, batch: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's last hidden state for a batch padded on the tokenizer's side, and its mask."""
        input_ids, mask = self._padded(batch)
        # Pooled in float32 whatever the model's precision (exact means, norms).
        hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        return hidden, mask

    def _padded(self, batch: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's ids padded on the tokenizer's side, and its attention mask, on the device."""
        for item in batch:
            if isinstance(item.features, Windows):  # /embed_all: no vector per token for a chunked input
                raise InputRejected(f"input is {item.tokens} tokens long; /embed_all takes at most {self.max_tokens}")
        longest = max(item.tokens for item in batch)
        input_ids = torch.full((len(batch), longest), self._tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, item in enumerate(batch):
            span = slice(longest - item.tokens, longest) if self._pad_left else slice(0, item.tokens)
            input_ids[row, span] = torch.tensor(item.features, dtype=torch.long)
            mask[row, span] = 1
        return input_ids.to(self._device), mask.to(self._device)


def _dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _openai_document(vectors: list[np.ndarray], model: str, prompt_tokens: int, encoding_format: str) -> bytes:
    """``POST /v1/embeddings``: OpenAI's embeddings response."""
    data = []
    for index, vector in enumerate(vectors):
        if encoding_format == "base64":
            # OpenAI's base64 format: little-endian float32 bytes.
            embedding: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return _dumps({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
