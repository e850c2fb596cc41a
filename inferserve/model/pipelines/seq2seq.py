"""Encoder-decoder generation, as the 4.x pipelines did it:
text2text-generation, summarization and translation."""

from __future__ import annotations

from typing import Any

import torch
import transformers

from ..errors import InputRejected
from .base import OwnPipeline, own_task_family, positive_int, unexpected

SEQ2SEQ_OUTPUT_KEYS = {
    "text2text-generation": "generated_text",
    "summarization": "summary_text",
    "translation": "translation_text",
}


class Seq2SeqGeneration(OwnPipeline):
    """Encoder-decoder generation: text2text-generation, summarization, translation.

    Outputs ``[{"generated_text" | "summary_text" | "translation_text": ...}]``
    per input (one entry per returned sequence), as the 4.x pipelines did.
    A ``task_specific_params`` entry in the model's config (T5's
    "summarize: " prefix, its generation defaults) applies as it did there.
    """

    generates = True
    _OWN_PARAMS = frozenset({"clean_up_tokenization_spaces", "truncation", "src_lang", "tgt_lang"})

    def __init__(self, task: str, model: Any, tokenizer: Any) -> None:
        super().__init__(model, tokenizer)
        self.task = task
        family = own_task_family(task) or task
        self._key = SEQ2SEQ_OUTPUT_KEYS[family]
        specific = (getattr(model.config, "task_specific_params", None) or {}).get(task, {})
        self._prefix = specific.get("prefix") or getattr(model.config, "prefix", None) or ""
        self._generate_defaults = {k: v for k, v in specific.items() if k != "prefix"}
        self._generation_names = set(transformers.GenerationConfig().to_dict())
        # Multilingual tokenizers (mBART, M2M100, NLLB) build translation
        # inputs themselves: source language tag, forced target BOS token.
        self._multilingual = family == "translation" and hasattr(tokenizer, "_build_translation_inputs")
        parts = task.split("_")  # translation_en_to_fr names both languages
        self._languages = {"src_lang": parts[1], "tgt_lang": parts[3]} if len(parts) == 4 else {}

    def _sanitize_parameters(self, **params: Any) -> tuple[dict, dict, dict]:
        for name in params:
            if name not in self._OWN_PARAMS and name not in self._generation_names:
                raise unexpected(name)
        if ("src_lang" in params or "tgt_lang" in params) and not self._multilingual:
            raise ValueError("src_lang/tgt_lang need a multilingual translation model (mBART, M2M100, NLLB)")
        if "num_return_sequences" in params:
            positive_int(params, "num_return_sequences", 1)
        return {}, dict(params), {}

    def __call__(self, inputs: Any, batch_size: int | None = None, **params: Any) -> Any:
        self._sanitize_parameters(**params)
        if isinstance(inputs, list):
            size = max(1, batch_size or 1)
            outputs: list[Any] = []
            for first in range(0, len(inputs), size):
                outputs.extend(self._generate(inputs[first:first + size], params))
            return outputs
        return self._generate([inputs], params)[0]

    def check_input(self, value: Any) -> None:
        if not isinstance(value, str):
            raise InputRejected(f"{self.task} takes a string")

    def _generate(self, texts: list[str], params: dict[str, Any]) -> list[list[dict[str, str]]]:
        for text in texts:
            self.check_input(text)
        settings = dict(params)
        clean = settings.pop("clean_up_tokenization_spaces", False)
        truncate = settings.pop("truncation", True)
        languages = {name: settings.pop(name, self._languages.get(name)) for name in ("src_lang", "tgt_lang")}
        limit = self._token_limit
        tokenize = dict(padding=True, return_tensors="pt",
                        truncation=bool(truncate and limit), max_length=limit if truncate else None)
        prefixed = [self._prefix + text for text in texts]
        if self._multilingual:  # as the 4.x TranslationPipeline did
            encoded = self.tokenizer._build_translation_inputs(prefixed, **languages, **tokenize)
        else:
            encoded = self.tokenizer(prefixed, **tokenize)
        encoded.pop("token_type_ids", None)  # encoder-decoder models take none
        encoded = encoded.to(self.device)
        with torch.inference_mode():
            generated = self.model.generate(**encoded, **{**self._generate_defaults, **settings})
        per_input = generated.shape[0] // len(texts)
        decoded = self.tokenizer.batch_decode(
            generated, skip_special_tokens=True, clean_up_tokenization_spaces=clean
        )
        return [
            [{self._key: text} for text in decoded[i * per_input:(i + 1) * per_input]]
            for i in range(len(texts))
        ]

    def combine(self, outputs: list[Any]) -> list[Any]:
        """A list request's answer: one dict per input when each has one
        sequence (the 4.x pipelines flattened it the same way)."""
        if all(isinstance(out, list) and len(out) == 1 for out in outputs):
            return [out[0] for out in outputs]
        return outputs
