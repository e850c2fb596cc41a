"""The sentence-embedding task: one pooled vector per input (``/embed``,
``/v1/embeddings``).

Follows a sentence-transformers model directory: ``modules.json`` names a
Pooling module (``1_Pooling/config.json`` says mean / CLS / max /
mean-sqrt-len) and optionally a Normalize module; ``sentence_bert_config.json``
gives ``max_seq_length``. Pooling runs on the device, over the attention
mask, in one batched tensor operation. A plain transformers model (no
``modules.json``) gets mean pooling and no normalisation.
``config_sentence_transformers.json`` may name ``prompts`` (``prompt_name``
puts one in front of each input); TEI's ``/embed_all`` gets every token's
vector from the same forward pass, unpooled (``token_embeddings``).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch

from ...ipc import Call, EmbedOptions
from ..errors import ParametersRejected, too_long
from ..tokens import token_limit
from .base import Prepared, TaskPlan, prepared_or_error, run_isolated
from .tokenization import TRUNCATION_DIRECTIONS, encode_input, prompt_text, read_prompts

_POOLING_MODES = ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "mean_tokens")
# How TEI's /info names each pooling mode.
TEI_POOLING_NAMES = {"cls_token": "cls", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
                     "mean_tokens": "mean"}


@dataclass(frozen=True)
class PoolingConfig:
    mode: str = "mean_tokens"
    normalize: bool = False
    max_seq_length: int | None = None


def read_pooling_config(model_dir: str) -> PoolingConfig:
    modules_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(modules_path):
        return PoolingConfig()
    with open(modules_path, encoding="utf-8") as f:
        modules = json.load(f)
    mode = "mean_tokens"
    normalize = False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            with open(os.path.join(model_dir, module["path"], "config.json"), encoding="utf-8") as f:
                pooling = json.load(f)
            chosen = [m for m in _POOLING_MODES if pooling.get(f"pooling_mode_{m}")]
            if len(chosen) != 1:
                raise ValueError(f"unsupported pooling configuration: {chosen or 'none'}")
            mode = chosen[0]
        elif kind.endswith(".Normalize"):
            normalize = True
    max_seq_length = None
    sbert_path = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.isfile(sbert_path):
        with open(sbert_path, encoding="utf-8") as f:
            max_seq_length = json.load(f).get("max_seq_length")
    return PoolingConfig(mode=mode, normalize=normalize, max_seq_length=max_seq_length)


class SentenceEmbeddingTask:
    def __init__(self, pipe: Any, model_dir: str, truncate: bool = True) -> None:
        self._model = pipe.model
        self._tokenizer = pipe.tokenizer
        self._device = pipe.device
        self._truncate = truncate
        self.config = read_pooling_config(model_dir) if os.path.isdir(model_dir) else PoolingConfig()
        self.max_tokens = token_limit(self._tokenizer, self._model.config, self.config.max_seq_length)
        self.dimension = int(self._model.config.hidden_size)
        self._vocab_size = int(self._model.config.vocab_size)
        self.prompts = read_prompts(model_dir) if os.path.isdir(model_dir) else {}
        self.sentence_transformers = os.path.isfile(os.path.join(model_dir, "modules.json"))

    def plan(self, call: Call) -> TaskPlan:
        # Options that change how an input is tokenized (truncate, direction,
        # prompt) act in prepare, per input; only those that change the pooled
        # output (normalize, dimensions) keep requests out of each other's batches.
        options = call.embed or EmbedOptions()
        if options.dimensions is not None and not 1 <= options.dimensions <= self.dimension:
            raise ParametersRejected(f"dimensions must be between 1 and {self.dimension}")
        if options.truncation_direction not in TRUNCATION_DIRECTIONS:
            raise ParametersRejected(f"truncation_direction must be one of {', '.join(TRUNCATION_DIRECTIONS)}")
        prompt_text(self.prompts, options.prompt_name)  # an unknown name is refused here
        normalize = self.config.normalize if options.normalize is None else options.normalize
        return TaskPlan(options, (normalize, options.dimensions))

    def prepare(self, value: Any, options: EmbedOptions | None = None) -> Prepared:
        """Text, or a list of token ids (taken as already tokenized)."""
        options = options or EmbedOptions()
        ids = encode_input(
            self._tokenizer,
            value,
            self.max_tokens,
            self._truncate if options.truncate is None else options.truncate,
            options.truncation_direction,
            prompt_text(self.prompts, options.prompt_name),
            vocabulary=self._vocab_size,
        )
        return Prepared(value=value, features=ids, tokens=len(ids))

    def prepare_all(self, items: list[tuple[Any, EmbedOptions]]) -> list[Prepared | Exception]:
        """Texts truncated on the right (the usual case) in one fast-tokenizer
        call per (truncate, prompt); the rest one by one, as ``prepare``."""
        results: list[Prepared | Exception | None] = [None] * len(items)
        together: dict[tuple[bool, str | None], list[int]] = {}
        for index, (value, options) in enumerate(items):
            if isinstance(value, str) and options.truncation_direction == "right":
                try:
                    prompt = prompt_text(self.prompts, options.prompt_name)
                except ParametersRejected as exc:
                    results[index] = exc
                    continue
                truncate = self._truncate if options.truncate is None else options.truncate
                together.setdefault((truncate, prompt), []).append(index)
            else:
                results[index] = prepared_or_error(self.prepare, value, options)
        for (truncate, prompt), indices in together.items():
            texts = [(prompt or "") + items[i][0] for i in indices]
            encoded = self._tokenizer(texts, truncation=truncate and self.max_tokens is not None,
                                      max_length=self.max_tokens if truncate else None)["input_ids"]
            for i, ids in zip(indices, encoded):
                if not truncate and self.max_tokens is not None and len(ids) > self.max_tokens:
                    results[i] = too_long(len(ids), self.max_tokens)
                else:
                    results[i] = Prepared(value=items[i][0], features=ids, tokens=len(ids))
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
        hidden, _ = self._hidden(batch)
        rows = hidden.cpu().numpy()
        return [np.ascontiguousarray(rows[row, : item.tokens]) for row, item in enumerate(batch)]

    @torch.inference_mode()
    def _embed(self, batch: list[Prepared], normalize: bool | None, dimensions: int | None) -> list[np.ndarray]:
        hidden, mask = self._hidden(batch)
        pooled = self._pool(hidden, mask)
        if dimensions is not None:
            pooled = pooled[:, :dimensions]
        if self.config.normalize if normalize is None else normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return list(pooled.float().cpu().numpy())

    def _hidden(self, batch: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's last hidden state for a right-padded batch, and its attention mask."""
        longest = max(item.tokens for item in batch)
        input_ids = torch.full((len(batch), longest), self._tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : item.tokens] = torch.tensor(item.features, dtype=torch.long)
            mask[row, : item.tokens] = 1
        input_ids, mask = input_ids.to(self._device), mask.to(self._device)
        # Pooled in float32 whatever the model's precision (exact means, norms).
        hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        return hidden, mask

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mode = self.config.mode
        if mode == "cls_token":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if mode == "max_tokens":
            return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        summed = (hidden * weights).sum(dim=1)
        counts = weights.sum(dim=1).clamp(min=1e-9)
        if mode == "mean_sqrt_len_tokens":
            return summed / counts.sqrt()
        return summed / counts


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
