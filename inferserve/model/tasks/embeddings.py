"""The sentence-embedding task: one pooled vector per input (``/embed``,
``/v1/embeddings``).

Follows a sentence-transformers model directory: ``modules.json`` names a
Pooling module (``1_Pooling/config.json`` says mean / CLS / max /
mean-sqrt-len) and optionally a Normalize module; ``sentence_bert_config.json``
gives ``max_seq_length``. Pooling runs on the device, over the attention
mask, in one batched tensor operation. A plain transformers model (no
``modules.json``) gets mean pooling and no normalisation.
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
from ..errors import InputRejected, ParametersRejected
from ..tokens import token_limit
from .base import Prepared, TaskPlan, run_isolated

_POOLING_MODES = ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "mean_tokens")


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

    def plan(self, call: Call) -> TaskPlan:
        options = call.embed or EmbedOptions()
        if options.dimensions is not None and not 1 <= options.dimensions <= self.dimension:
            raise ParametersRejected(f"dimensions must be between 1 and {self.dimension}")
        return TaskPlan(options, (options.normalize, options.dimensions))

    def prepare(self, value: Any, options: EmbedOptions | None = None) -> Prepared:
        """Text, or a list of token ids (taken as already tokenized)."""
        if isinstance(value, str):
            ids = self._tokenizer(value, truncation=False)["input_ids"]
        elif isinstance(value, list) and value and all(isinstance(i, int) for i in value):
            if not all(0 <= i < self._vocab_size for i in value):
                raise InputRejected(f"token ids must be in [0, {self._vocab_size})")
            ids = list(value)
        else:
            raise InputRejected("each input must be a non-empty string or a list of token ids")
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            if not self._truncate:
                raise InputRejected(f"input is {len(ids)} tokens long; the model takes at most {self.max_tokens}")
            if isinstance(value, str):
                ids = self._tokenizer(value, truncation=True, max_length=self.max_tokens)["input_ids"]
            else:
                ids = ids[: self.max_tokens]
        return Prepared(value=value, features=ids, tokens=len(ids))

    def run(self, batch: list[Prepared], options: EmbedOptions) -> list[Any]:
        return run_isolated(batch, lambda part: self._embed(part, options.normalize, options.dimensions))

    def encode(self, outputs: list[Any], call: Call, options: EmbedOptions, tokens: int) -> bytes:
        if options.response == "openai":
            return _openai_document(outputs, options.model_name, tokens, options.encoding_format)
        return _dumps(np.stack(outputs))  # TEI's shape: a list of vectors

    def warmup(self) -> None:
        self._embed([self.prepare("hello world")] * 2, None, None)

    @torch.inference_mode()
    def _embed(self, batch: list[Prepared], normalize: bool | None, dimensions: int | None) -> list[np.ndarray]:
        longest = max(item.tokens for item in batch)
        input_ids = torch.full((len(batch), longest), self._tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : item.tokens] = torch.tensor(item.features, dtype=torch.long)
            mask[row, : item.tokens] = 1
        input_ids, mask = input_ids.to(self._device), mask.to(self._device)
        hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = self._pool(hidden, mask)
        if dimensions is not None:
            pooled = pooled[:, :dimensions]
        if self.config.normalize if normalize is None else normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return list(pooled.float().cpu().numpy())

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
